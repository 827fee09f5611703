//! Request tracing through the real binary: W3C `traceparent` reaches upstreams (proxied,
//! SSE) and HTTP tools with the caller's trace id and the gateway's span as the parent;
//! log lines emitted while serving carry the request id; with the `otlp` feature and
//! `[telemetry]`, the request spans arrive at an OTLP/HTTP receiver with their attributes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agentgate_proxy::trace::TraceParent;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::client::{Client, Reply};
use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;

/// What an origin received: path, `traceparent`, `tracestate`, `x-session-id`.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    session: Option<String>,
}

type Log<T> = Arc<Mutex<Vec<T>>>;

/// Serves `answer` on `127.0.0.1:0` (HTTP/1) in the background.
async fn serve<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer)),
            );
        }
    });
    addr
}

/// An origin that records what it got: `/events/..` answers one SSE event, `/tool` `{}`,
/// anything else `ok`.
async fn recording_origin() -> (SocketAddr, Log<Seen>) {
    let seen: Log<Seen> = Arc::default();
    let log = Arc::clone(&seen);
    let addr = serve(move |req: Request<Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let path = req.uri().path().to_owned();
            log.lock().unwrap().push(Seen {
                path: path.clone(),
                traceparent: header("traceparent"),
                tracestate: header("tracestate"),
                session: header("x-session-id"),
            });
            let (kind, body) = if path.starts_with("/events/") {
                ("text/event-stream", "id: 1\ndata: {}\n\n")
            } else if path == "/tool" {
                ("application/json", "{}")
            } else {
                ("text/plain", "ok")
            };
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            response
                .headers_mut()
                .insert("content-type", kind.parse().unwrap());
            Ok(response)
        }
    })
    .await;
    (addr, seen)
}

/// The config: agent API under `/v2/`, `/events/` an SSE route and everything else an
/// upstream route to `origin`, an HTTP tool `probe` on it, JSON logs, plus `extra`.
fn config(origin: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 1
log_format = "json"
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
[[routes]]
name = "agent"
path_prefix = "/v2/"
[[routes]]
name = "events"
kind = "sse"
path_prefix = "/events/"
upstream = "origin"
[[routes]]
name = "web"
kind = "upstream"
path_prefix = "/"
upstream = "origin"
[upstreams.origin]
peers = ["{origin}"]
[tools.probe]
kind = "http"
upstream = "origin"
path = "/tool"
{extra}
"#
    )
}

/// The one request `seen` has for `path`, its `traceparent` parsed.
fn seen_at(seen: &Log<Seen>, path: &str) -> (Seen, TraceParent) {
    let all = seen.lock().unwrap();
    let mut at = all.iter().filter(|s| s.path == path);
    let one = at
        .next()
        .unwrap_or_else(|| panic!("the origin got no {path}: {all:?}"))
        .clone();
    assert!(at.next().is_none(), "{path} reached the origin twice");
    let traceparent = one
        .traceparent
        .as_deref()
        .unwrap_or_else(|| panic!("{path} reached the origin without a traceparent: {one:?}"));
    let parsed = TraceParent::parse(traceparent.as_bytes())
        .unwrap_or_else(|| panic!("{path}: invalid traceparent {traceparent:?}"));
    (one, parsed)
}

/// A `traceparent` for a made-up caller.
fn caller(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

/// Requests that exercise every propagation path; what each proved, for the OTLP checks.
#[cfg_attr(not(feature = "otlp"), allow(dead_code))] // read only by the OTLP test
struct Traced {
    proxied: (TraceParent, Reply),
    fresh: (TraceParent, Reply),
    tools: (TraceParent, Reply),
    session: String,
}

const PROXIED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PROXIED_PARENT: &str = "00f067aa0ba902b7";
const SSE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const TOOLS_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const TOOLS_PARENT: &str = "051581bf3cb55c13";

/// Sends the requests and checks what the origin got; `gateway` logs at debug.
async fn propagate(gateway: &mut Process, seen: &Log<Seen>) -> Traced {
    let client = Client::new(gateway.addr);

    // A proxied request joins the caller's trace; tracestate passes through.
    let proxied = client
        .send_call(
            client
                .get("/hello")
                .header("traceparent", &caller(PROXIED_TRACE, PROXIED_PARENT))
                .header("tracestate", "vendor=opaque,other=1"),
        )
        .await;
    assert_eq!(proxied.status, StatusCode::OK, "{}", proxied.text);
    let (got, parent) = seen_at(seen, "/hello");
    assert_eq!(parent.trace_id.to_string(), PROXIED_TRACE);
    assert_ne!(
        parent.parent_id.to_string(),
        PROXIED_PARENT,
        "a new span id"
    );
    assert_eq!(got.tracestate.as_deref(), Some("vendor=opaque,other=1"));
    let proxied = (parent, proxied);

    // A request without (or with a broken) traceparent starts a new trace.
    let fresh = client
        .send_call(
            client
                .get("/fresh")
                .header("traceparent", "00-zz-broken-01"),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    let (_, parent) = seen_at(seen, "/fresh");
    assert_ne!(parent.trace_id.to_string(), PROXIED_TRACE);
    let fresh = (parent, fresh);

    // The SSE route's pooled client sends it too.
    let sse = client
        .send_call(
            client
                .get("/events/feed")
                .header("traceparent", &caller(SSE_TRACE, PROXIED_PARENT)),
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK, "{}", sse.text);
    let (_, parent) = seen_at(seen, "/events/feed");
    assert_eq!(parent.trace_id.to_string(), SSE_TRACE);
    assert_ne!(parent.parent_id.to_string(), PROXIED_PARENT);

    // An HTTP tool called by an agent request propagates the request's trace.
    let init = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(init.status, StatusCode::CREATED, "{}", init.text);
    let session = init.json["id"].as_str().expect("id").to_owned();
    let tools = client
        .send_call(
            client
                .post(&format!("/v2/sessions/{session}/tools"))
                .bearer(KEY)
                .header("traceparent", &caller(TOOLS_TRACE, TOOLS_PARENT))
                .json(&json!({"calls": [{"id": "p", "tool": "probe", "input": {}}]})),
        )
        .await;
    assert_eq!(tools.status, StatusCode::OK, "{}", tools.text);
    assert_eq!(tools.json["succeeded"], 1, "{}", tools.text);
    let (got, parent) = seen_at(seen, "/tool");
    assert_eq!(got.session.as_deref(), Some(session.as_str()));
    assert_eq!(parent.trace_id.to_string(), TOOLS_TRACE);
    assert_ne!(parent.parent_id.to_string(), TOOLS_PARENT);

    // A log line emitted by the tool while the request ran carries the request's span.
    let request_id = tools.header("x-request-id").expect("request id").to_owned();
    let line = blocking(|| {
        gateway.line_where(|l| l.contains("http tool call") && l.contains(&request_id))
    });
    let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let span = &entry["span"];
    assert_eq!(span["request_id"], request_id.as_str(), "{line}");
    assert_eq!(span["route"], "agent", "{line}");
    assert_eq!(span["session"], session.as_str(), "{line}");
    assert_eq!(span["trace_id"], TOOLS_TRACE, "{line}");

    Traced {
        proxied,
        fresh,
        tools: (parent, tools),
        session,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_reaches_upstreams_sse_and_tools_with_the_request_span_as_parent() {
    let (origin, seen) = recording_origin().await;
    let mut gateway =
        blocking(|| Process::start_with_log(&config(origin, ""), "info,agentgate=debug"));
    propagate(&mut gateway, &seen).await;
    // Stopping with request spans (and, with `otlp`, the span link) in use is clean.
    let status = blocking(move || gateway.terminate());
    assert!(status.success(), "graceful stop: {status:?}");
}

#[cfg(not(feature = "otlp"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_without_the_otlp_feature_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentgate.toml");
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n",
    );
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("telemetry: ") && stderr.contains("`otlp` feature"),
        "{stderr}"
    );
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::collections::HashMap;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    use super::*;

    /// One exported span: ids as hex, attributes as JSON values, the service name.
    #[derive(Debug, Clone)]
    struct Exported {
        name: String,
        trace_id: String,
        span_id: String,
        parent_span_id: String,
        attributes: HashMap<String, Value>,
        service: String,
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn json_of(value: Option<&Any>) -> Value {
        match value {
            Some(Any::StringValue(s)) => json!(s),
            Some(Any::IntValue(i)) => json!(i),
            Some(Any::BoolValue(b)) => json!(b),
            Some(Any::DoubleValue(d)) => json!(d),
            other => json!(format!("{other:?}")),
        }
    }

    fn attributes(
        list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    ) -> HashMap<String, Value> {
        list.iter()
            .map(|kv| {
                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                (kv.key.clone(), json_of(value))
            })
            .collect()
    }

    /// An OTLP/HTTP (protobuf) receiver on `127.0.0.1:0` keeping every span it gets.
    async fn receiver() -> (SocketAddr, Log<Exported>) {
        let spans: Log<Exported> = Arc::default();
        let log = Arc::clone(&spans);
        let addr = serve(move |req: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let path_ok =
                    req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let decoded = path_ok
                    .then(|| ExportTraceServiceRequest::decode(body).ok())
                    .flatten();
                let Some(export) = decoded else {
                    let mut bad = Response::new(Full::new(Bytes::new()));
                    *bad.status_mut() = StatusCode::BAD_REQUEST;
                    return Ok(bad);
                };
                let mut log = log.lock().unwrap();
                for resource_spans in export.resource_spans {
                    let resource = resource_spans
                        .resource
                        .map(|r| attributes(&r.attributes))
                        .unwrap_or_default();
                    let service = resource
                        .get("service.name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                        log.push(Exported {
                            name: span.name,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            attributes: attributes(&span.attributes),
                            service: service.clone(),
                        });
                    }
                }
                let mut ok = Response::new(Full::new(Bytes::new()));
                ok.headers_mut()
                    .insert("content-type", "application/x-protobuf".parse().unwrap());
                Ok(ok)
            }
        })
        .await;
        (addr, spans)
    }

    /// Waits (polling; fails after a generous bound, never on timing) for the exported
    /// `request` span of trace `trace_id`.
    async fn span_of(spans: &Log<Exported>, trace_id: &str) -> Exported {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let hit = spans
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|s| s.name == "request" && s.trace_id == trace_id)
                    .cloned();
                if let Some(span) = hit {
                    return span;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no span of trace {trace_id} arrived; got {:#?}",
                spans.lock().unwrap()
            )
        })
    }

    fn attr<'a>(span: &'a Exported, key: &str) -> &'a Value {
        span.attributes
            .get(key)
            .unwrap_or_else(|| panic!("span lacks {key}: {span:#?}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_spans_are_exported_over_otlp_with_their_attributes() {
        let (collector, spans) = receiver().await;
        let (origin, seen) = recording_origin().await;
        let telemetry = format!(
            "[telemetry]\notlp_endpoint = \"http://{collector}/v1/traces\"\n\
             service_name = \"agentgate-test\"\nbatch_delay_ms = 50\n"
        );
        let mut gateway = blocking(|| {
            Process::start_with_log(&config(origin, &telemetry), "info,agentgate=debug")
        });
        let traced = propagate(&mut gateway, &seen).await;

        // The proxied request: joined the caller's trace, and the span the upstream was
        // told about (its parent id) is the span exported.
        let (sent, reply) = &traced.proxied;
        let span = span_of(&spans, PROXIED_TRACE).await;
        assert_eq!(span.parent_span_id, PROXIED_PARENT);
        assert_eq!(span.span_id, sent.parent_id.to_string());
        assert_eq!(span.service, "agentgate-test");
        assert_eq!(attr(&span, "route"), "web");
        assert_eq!(attr(&span, "method"), "GET");
        assert_eq!(attr(&span, "path"), "/hello");
        assert_eq!(attr(&span, "status"), 200);
        assert_eq!(attr(&span, "upstream"), origin.to_string().as_str());
        assert_eq!(
            attr(&span, "request_id"),
            reply.header("x-request-id").expect("request id")
        );

        // A new trace: a root span, the one whose id the upstream got.
        let (sent, reply) = &traced.fresh;
        let span = span_of(&spans, &sent.trace_id.to_string()).await;
        assert_eq!(span.parent_span_id, "", "a root span: {span:#?}");
        assert_eq!(span.span_id, sent.parent_id.to_string());
        assert_eq!(
            attr(&span, "request_id"),
            reply.header("x-request-id").expect("request id")
        );

        // The agent request that ran the tool: its session id and route.
        let (sent, reply) = &traced.tools;
        let span = span_of(&spans, TOOLS_TRACE).await;
        assert_eq!(span.parent_span_id, TOOLS_PARENT);
        assert_eq!(span.span_id, sent.parent_id.to_string());
        assert_eq!(attr(&span, "route"), "agent");
        assert_eq!(attr(&span, "session"), traced.session.as_str());
        assert_eq!(attr(&span, "status"), 200);
        assert_eq!(
            attr(&span, "request_id"),
            reply.header("x-request-id").expect("request id")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_spans_are_flushed_when_the_gateway_stops() {
        let (collector, spans) = receiver().await;
        let (origin, _seen) = recording_origin().await;
        // The longest batch delay: only the shutdown flush can send the span in time.
        let telemetry = format!(
            "[telemetry]\notlp_endpoint = \"http://{collector}/v1/traces\"\n\
             batch_delay_ms = 60000\n"
        );
        let mut gateway = blocking(|| Process::start(&config(origin, &telemetry)));
        let client = Client::new(gateway.addr);
        let reply = client
            .send_call(
                client
                    .get("/bye")
                    .header("traceparent", &caller(PROXIED_TRACE, PROXIED_PARENT)),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let status = blocking(move || gateway.terminate());
        assert!(status.success(), "graceful stop: {status:?}");
        let exported = spans.lock().unwrap().clone();
        let span = exported
            .iter()
            .find(|s| s.name == "request" && s.trace_id == PROXIED_TRACE)
            .unwrap_or_else(|| panic!("the span was not flushed at exit: {exported:#?}"));
        assert_eq!(span.service, "agentgate");
        assert_eq!(attr(span, "path"), "/bye");
    }
}

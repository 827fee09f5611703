//! Browsers get HTTP/2 on the TLS listener: headless Chromium holds twenty `EventSource`
//! streams to twenty sessions open at once over one connection, and `curl --http2` reads a
//! stream over TLS as HTTP/2.
//!
//! Over HTTP/1.1 a browser opens at most six connections to a host, one request each at a
//! time, so a seventh stream (and every report the page makes) would wait for one of the
//! first six to end. The test appends to the sessions only once all twenty streams have
//! reported open, so without HTTP/2 it deadlocks into the bounded wait for the reports.
//! Beyond that, the page reports what its resource timing entries say of every request:
//! the protocol (`nextHopProtocol`), and whether it opened a connection of its own (a
//! request on a connection already open has `connectStart == connectEnd`).
//!
//! The connections are not counted from outside: Chromium opens one to three connections
//! at the start here and closes the spare ones unused (a handshake only), some at once,
//! some a second later, so a count is a race.
//!
//! The certificate is self-signed at the start of each test (`rcgen`, for `localhost` and
//! `127.0.0.1`); Chromium trusts it by its public key, curl by the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData as _;
use serde_json::{Value, json};

use crate::client::within;
use crate::edge::{Edge, KEY};
use crate::headless::Browser;
use crate::page_origin::PageOrigin;

/// Sessions the page follows at once: more than the six connections per host a browser
/// allows itself over HTTP/1.1.
const STREAMS: usize = 20;

/// The agent API under `/v2/`, alone.
const AGENT_ROUTE: &str = r#"
[[routes]]
name = "agent"
kind = "agent"
path_prefix = "/v2/"
"#;

/// Opens one `EventSource` per session of `?sessions=` (with the tokens of `?tokens=`),
/// reports each stream's opening and first event, closes each stream when it ends after
/// its `complete` event, and once every stream has its resource timing entry (made when
/// its response ends) reports the protocol of every resource it loaded and whether it
/// opened a connection.
const PAGE: &str = r#"<!doctype html>
<html><body><script>
const params = new URLSearchParams(location.search);
const ids = params.get('sessions').split(',');
const tokens = params.get('tokens').split(',');
const report = (kind, body) =>
  fetch('/report?kind=' + kind, {method: 'POST', body: JSON.stringify(body)});
ids.forEach((id, i) => {
  const es = new EventSource('/v2/sessions/' + id + '/stream?token=' + tokens[i]);
  let first = true;
  let completed = false;
  es.onopen = () => report('open', {i});
  es.addEventListener('delta', (e) => {
    if (first) {
      first = false;
      report('event', {i, data: JSON.parse(e.data)});
    }
  });
  es.addEventListener('complete', () => { completed = true; });
  // The stream ended after its last event: no reconnection.
  es.onerror = () => { if (completed) es.close(); };
});
let reported = false;
const reportProtocols = () => {
  const resources = performance.getEntriesByType('resource');
  const streams = resources.filter((r) => r.name.includes('/stream?'));
  if (reported || streams.length < ids.length) return;
  reported = true;
  const nav = performance.getEntriesByType('navigation')[0];
  report('protocols', {
    page: nav.nextHopProtocol,
    resources: resources.map((r) => ({
      name: r.name,
      protocol: r.nextHopProtocol,
      connected: r.connectEnd > r.connectStart,
    })),
  });
};
new PerformanceObserver(reportProtocols).observe({type: 'resource'});
</script></body></html>"#;

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to `dir`.
struct SelfSigned {
    chain: PathBuf,
    key: PathBuf,
    /// The DER SubjectPublicKeyInfo of its key (what Chromium is told to trust).
    spki: Vec<u8>,
}

impl SelfSigned {
    fn write(dir: &Path) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        let chain = dir.join("chain.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&chain, cert.pem()).expect("write chain");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Self {
            chain,
            key: key_file,
            spki: key.subject_public_key_info(),
        }
    }
}

/// A gateway with a TLS listener on `127.0.0.1:0` presenting a fresh self-signed
/// certificate, and `routes` (TOML).
struct TlsEdge {
    edge: Edge,
    cert: SelfSigned,
    _dir: tempfile::TempDir,
}

impl TlsEdge {
    async fn start(routes: &str) -> Self {
        let dir = tempfile::tempdir().expect("certificate dir");
        let cert = SelfSigned::write(dir.path());
        let edge = Edge::from_toml(&format!(
            r#"
[server.tls]
listen = ["127.0.0.1:0"]
[[server.tls.certificates]]
chain = "{}"
key = "{}"
{routes}
"#,
            cert.chain.display(),
            cert.key.display()
        ))
        .await;
        Self {
            edge,
            cert,
            _dir: dir,
        }
    }

    /// `POST path` with a JSON body as [`KEY`] over the cleartext listener; asserts
    /// success and returns the answer.
    async fn api(&self, path: &str, body: &Value) -> Value {
        let client = &self.edge.client;
        let reply = client
            .send_call(client.post(path).bearer(KEY).json(body))
            .await;
        assert!(
            reply.status.is_success(),
            "POST {path}: {} {}",
            reply.status,
            reply.text
        );
        reply.json
    }

    /// A new session: its id and stream token.
    async fn session(&self) -> (String, String) {
        let init = self.api("/v2/sessions", &json!({})).await;
        (
            init["id"].as_str().expect("id").to_owned(),
            init["stream_token"]
                .as_str()
                .expect("stream_token")
                .to_owned(),
        )
    }

    async fn append(&self, id: &str, data: Value) {
        let events = json!({"events": [{"kind": "delta", "data": data}]});
        self.api(&format!("/v2/sessions/{id}/events"), &events)
            .await;
    }

    async fn complete(&self, id: &str) {
        let complete = json!({"status": "succeeded", "final_response": "done"});
        self.api(&format!("/v2/sessions/{id}/complete"), &complete)
            .await;
    }
}

/// Waits for reports of `kind` until `count` distinct streams (`"i"`) have made one;
/// returns the reports' bodies by stream.
async fn one_per_stream(page: &mut PageOrigin, kind: &str, count: usize) -> Vec<Value> {
    let mut bodies = vec![Value::Null; count];
    let mut reported = BTreeSet::new();
    while reported.len() < count {
        let body = page.next_report(kind).await;
        let i = body["i"].as_u64().expect("stream index") as usize;
        assert!(i < count, "{body}");
        reported.insert(i);
        bodies[i] = body;
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_holds_twenty_streams_open_over_one_http2_connection() {
    let mut page = PageOrigin::start(PAGE).await;
    let tls = TlsEdge::start(&page.routes()).await;
    let mut sessions = Vec::new();
    for _ in 0..STREAMS {
        sessions.push(tls.session().await);
    }
    let ids: Vec<&str> = sessions.iter().map(|(id, _)| id.as_str()).collect();
    let tokens: Vec<&str> = sessions.iter().map(|(_, t)| t.as_str()).collect();
    let url = format!(
        "https://{}/page?sessions={}&tokens={}",
        tls.edge.tls_addr(),
        ids.join(","),
        tokens.join(",")
    );
    let _browser = Browser::open_trusting(&url, &tls.cert.spki);

    // All twenty open before any has an event: over HTTP/1.1 this wait times out.
    one_per_stream(&mut page, "open", STREAMS).await;
    for (n, id) in ids.iter().enumerate() {
        tls.append(id, json!({ "n": n })).await;
    }
    let firsts = one_per_stream(&mut page, "event", STREAMS).await;
    for (n, first) in firsts.iter().enumerate() {
        assert_eq!(first["data"], json!({ "n": n }), "stream {n}");
    }

    for id in &ids {
        tls.complete(id).await;
    }
    let protocols = page.next_report("protocols").await;
    assert_eq!(protocols["page"], "h2", "{protocols}");
    let resources = protocols["resources"].as_array().expect("resources");
    for resource in resources {
        assert_eq!(resource["protocol"], "h2", "{resource}");
    }
    // The page waited for every stream's entry: all went over the connection the page
    // came on, none opened its own.
    let streams: Vec<&Value> = resources
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.contains("/stream?")))
        .collect();
    assert_eq!(streams.len(), STREAMS, "{protocols}");
    for stream in streams {
        assert_eq!(stream["connected"], false, "{stream}");
    }
    tls.edge.stop().await;
}

#[tokio::test]
async fn curl_reads_an_event_stream_over_http2_on_tls() {
    let tls = TlsEdge::start(AGENT_ROUTE).await;
    let (id, token) = tls.session().await;
    for n in 0..2 {
        tls.append(&id, json!({ "n": n })).await;
    }
    tls.complete(&id).await;
    let url = format!(
        "https://{}/v2/sessions/{id}/stream?token={token}",
        tls.edge.tls_addr()
    );
    // The stream ends after `complete`, so curl exits by itself.
    let out = within(
        "curl to read the stream",
        tokio::process::Command::new("curl")
            .args(["--http2", "--silent", "--show-error", "--no-buffer"])
            .arg("--cacert")
            .arg(&tls.cert.chain)
            .args(["--write-out", "\n%{http_code} HTTP/%{http_version}"])
            .arg(&url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().last(), Some("200 HTTP/2"), "{stdout}");
    assert_eq!(stdout.matches("event: delta").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("event: complete").count(), 1, "{stdout}");
    tls.edge.stop().await;
}

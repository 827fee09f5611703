//! A real browser follows a multiplexed stream: headless Chromium's `EventSource` reads
//! `GET /v2/stream?sessions=a,b,c`, its connection is cut mid-stream, it reconnects by itself
//! with `Last-Event-ID`, and the page records every event of every session exactly once.
//!
//! The page is served through the gateway (an upstream route to a test origin), so the
//! stream is same-origin; the page reports to the origin (`POST /report`). The cut is made
//! by a TCP relay between the browser and the gateway that drops every connection at once.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::client::Client;
use crate::edge::{Edge, KEY};
use crate::headless::Browser;
use crate::page_origin::PageOrigin;

const PAGE: &str = r#"<!doctype html>
<html><body><pre id="log"></pre><script>
const params = new URLSearchParams(location.search);
const total = Number(params.get('n'));
const seen = [];
const done = new Set();
let opens = 0;
const report = (kind, body) =>
  fetch('/report?kind=' + kind, {method: 'POST', body: JSON.stringify(body)});
const es = new EventSource('/v2/stream?sessions=' + params.get('sessions') +
                           '&tokens=' + params.get('tokens'));
es.onopen = () => { opens += 1; report('open', {opens}); };
es.onmessage = (e) => {
  const envelope = JSON.parse(e.data);
  seen.push(envelope.stream + ' ' + envelope.id);
  report('seen', {count: seen.length});
  if (envelope.event === 'complete') done.add(envelope.stream);
  if (done.size === total) {
    es.close(); // an EventSource would reconnect after the end otherwise
    report('done', {seen, opens});
  }
};
</script></body></html>"#;

/// A TCP relay to `target` whose connections can all be cut at once.
struct Relay {
    addr: SocketAddr,
    cut: broadcast::Sender<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let (cut, _) = broadcast::channel(4);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.recv() => {} // both sockets drop: the browser sees a reset
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn cut_all(&self) {
        let _ = self.cut.send(());
    }
}

async fn json_call(client: &Client, call: crate::client::Call) -> Value {
    let reply = client.send_call(call).await;
    assert!(reply.status.is_success(), "{} {}", reply.status, reply.text);
    reply.json
}

/// Waits until the page has seen `count` events.
async fn seen_count(page: &mut PageOrigin, count: u64) {
    loop {
        if page.next_report("seen").await["count"].as_u64() >= Some(count) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_eventsource_resumes_a_multiplexed_stream_exactly() {
    let mut page = PageOrigin::start(PAGE).await;
    let edge = Edge::from_toml(&format!("[sse]\nretry_ms = 200\n{}", page.routes())).await;
    let client = edge.client.clone();
    let relay = Relay::start(edge.addr).await;

    // Three sessions, a first event each.
    let mut sessions = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..3 {
        let init = json_call(
            &client,
            client.post("/v2/sessions").bearer(KEY).json(&json!({})),
        )
        .await;
        sessions.push((
            init["id"].as_str().expect("id").to_owned(),
            init["stream_token"].as_str().expect("token").to_owned(),
        ));
    }
    let append = |i: usize, n: usize| {
        let (client, id) = (client.clone(), sessions[i].0.clone());
        async move {
            let events: Vec<Value> = (0..n)
                .map(|k| json!({"kind": "delta", "data": {"k": k}}))
                .collect();
            let reply = json_call(
                &client,
                client
                    .post(&format!("/v2/sessions/{id}/events"))
                    .bearer(KEY)
                    .json(&json!({ "events": events })),
            )
            .await;
            let ids: Vec<String> = reply["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| format!("{id} {}", v.as_str().expect("id")))
                .collect();
            ids
        }
    };
    for i in 0..3 {
        expected.extend(append(i, 2).await);
    }

    let ids: Vec<&str> = sessions.iter().map(|(id, _)| id.as_str()).collect();
    let tokens: Vec<&str> = sessions.iter().map(|(_, t)| t.as_str()).collect();
    let url = format!(
        "http://{}/page?n=3&sessions={}&tokens={}",
        relay.addr,
        ids.join(","),
        tokens.join(",")
    );
    let _browser = Browser::open(&url);

    page.next_report("open").await;
    seen_count(&mut page, 6).await;
    // Live events, then the cut mid-stream, then events while the browser is away.
    for i in 0..3 {
        expected.extend(append(i, 3).await);
    }
    seen_count(&mut page, 15).await;
    relay.cut_all();
    for i in [2, 0] {
        expected.extend(append(i, 4).await);
    }
    let reopened = page.next_report("open").await;
    assert!(reopened["opens"].as_u64() >= Some(2), "{reopened}");
    // Every session completes; the page then reports what it saw.
    for (id, _) in &sessions {
        let reply = json_call(
            &client,
            client
                .post(&format!("/v2/sessions/{id}/complete"))
                .bearer(KEY)
                .json(&json!({"status": "succeeded", "final_response": "done"})),
        )
        .await;
        expected.push(format!(
            "{id} {}",
            reply["event_id"].as_str().expect("event id")
        ));
    }
    let done = page.next_report("done").await;
    let seen: Vec<String> = done["seen"]
        .as_array()
        .expect("seen list")
        .iter()
        .map(|v| v.as_str().expect("entry").to_owned())
        .collect();
    // Exactly once each; in order within each session.
    for (id, _) in &sessions {
        let of = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|e| e.starts_with(id.as_str()))
                .cloned()
                .collect()
        };
        assert_eq!(of(&seen), of(&expected), "session {id}");
    }
    assert_eq!(seen.len(), expected.len());
    assert!(
        done["opens"].as_u64() >= Some(2),
        "the browser reconnected by itself"
    );
    edge.stop().await;
}

//! The public listeners on the real binary, as browsers and attackers meet them: TLS with
//! the certificate chosen by SNI and replaced on SIGHUP while a stream stays open, HTTP/2 by
//! ALPN; slowloris clients closed at the head deadline while another client is served; the
//! per-address connection cap, directly and behind a trusted proxy; `check-config` naming a
//! certificate it cannot load.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Client, within};
use crate::gateway::{KEY, SECRET, blocking, metric};
use crate::process::Process;
use crate::support::tls::{IssuedFiles, TestCa, connect, h2_client, presented};

fn toml(extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
threads = 2
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
{extra}
"#
    )
}

fn tls_toml(certs: &[&IssuedFiles]) -> String {
    let mut extra = "[server.tls]\nlisten = \"127.0.0.1:0\"\n".to_owned();
    for cert in certs {
        extra.push_str(&format!(
            "[[server.tls.certificates]]\nchain = {:?}\nkey = {:?}\n",
            cert.chain, cert.key
        ));
    }
    toml(&extra)
}

/// `method path` with a JSON body over an HTTP/2 connection; the reply's JSON.
async fn h2_call(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(format!("https://edge.agents.test{uri}"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("request");
    let response = within("an HTTP/2 answer", send.send_request(request))
        .await
        .expect("HTTP/2 request");
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    let bytes = within("an HTTP/2 body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn metrics(process: &Process) -> String {
    let admin = Client::new(process.admin.expect("admin listener"));
    admin.send_call(admin.get("/metrics")).await.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_sighup_replaces_it_while_a_stream_flows() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    // The first certificate is for clients without SNI (an IP address sends none).
    let first = ca.issue(dir.path(), "first", &["127.0.0.1", "first.test"]);
    let named = ca.issue(dir.path(), "named", &["*.agents.test"]);
    let mut process = blocking(|| Process::start(&tls_toml(&[&first, &named])));
    let tls = process.addrs[1];
    let h2 = ca.client(&[b"h2", b"http/1.1"]);

    let by_ip = connect(tls, "127.0.0.1", h2.clone()).await.expect("no SNI");
    assert_eq!(presented(&by_ip), first.der);
    let by_name = connect(tls, "edge.agents.test", h2.clone())
        .await
        .expect("SNI");
    assert_eq!(presented(&by_name), named.der);
    assert_eq!(by_name.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1_only = connect(tls, "first.test", ca.client(&[b"http/1.1"]))
        .await
        .expect("HTTP/1.1 by ALPN");
    assert_eq!(h1_only.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // A stream over HTTP/2 on the named certificate's connection.
    let mut send = h2_client(by_name).await;
    let (status, session) = h2_call(&mut send, "POST", "/v2/sessions", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    let stream_url = session["stream_url"].as_str().expect("url").to_owned();
    let request = Request::builder()
        .uri(format!("https://edge.agents.test{stream_url}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = within("the stream head", send.send_request(request))
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = String::new();
    let mut read_until = async |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let frame = within(&format!("{needle:?} on the stream"), body.frame())
                .await
                .expect("the stream goes on")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    let append = |n: u64| json!({"events": [{"kind": "delta", "data": {"n": n}}]});
    let (status, _) = h2_call(
        &mut send,
        "POST",
        &format!("/v2/sessions/{id}/events"),
        Some(append(1)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    read_until("{\"n\":1}", &mut seen).await;

    // New certificate files in place, then SIGHUP.
    let renewed = ca.issue(dir.path(), "named", &["*.agents.test"]);
    assert_ne!(renewed.der, named.der);
    process.hangup();
    blocking(|| process.line_where(|l| l.contains("configuration reloaded")));
    let after = connect(tls, "edge.agents.test", h2.clone())
        .await
        .expect("handshake after the reload");
    assert_eq!(presented(&after), renewed.der);

    // The stream opened before the reload goes on.
    let mut other = h2_client(after).await;
    let (status, _) = h2_call(
        &mut other,
        "POST",
        &format!("/v2/sessions/{id}/events"),
        Some(append(2)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    read_until("{\"n\":2}", &mut seen).await;

    // A key that does not load is refused: the reload is rejected, the certificate stays.
    std::fs::write(&renewed.key, "not a key").expect("break the key");
    process.hangup();
    let line = blocking(|| process.line_where(|l| l.contains("reload rejected")));
    assert!(line.contains("named.key"), "{line}");
    let still = connect(tls, "edge.agents.test", h2)
        .await
        .expect("handshake");
    assert_eq!(presented(&still), renewed.der);
}

#[test]
fn check_config_names_the_certificate_it_cannot_load() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let good = ca.issue(dir.path(), "good", &["localhost"]);
    let other = ca.issue(dir.path(), "other", &["localhost"]);
    let mixed = IssuedFiles {
        key: other.key.clone(),
        ..good.clone()
    };
    let check = |certs: &[&IssuedFiles]| {
        let file = dir.path().join("agentgate.toml");
        std::fs::write(&file, tls_toml(certs)).expect("write config");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .expect("run check-config");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (code, text) = check(&[&good]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(&[&good, &mixed]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("server.tls.certificates") && text.contains("good.pem"),
        "{text}"
    );
    std::fs::remove_file(&other.chain).expect("remove");
    let (code, text) = check(&[&other]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("other.pem"), "{text}");
}

/// Sends a request head one header line at a time, `pause` apart, until the gateway
/// closes the connection; returns how many lines it sent. Never ends if it is not closed.
async fn dribble(addr: SocketAddr, pause: Duration, first_request: bool) -> usize {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    if first_request {
        // A whole request first: the next head's clock starts at its first byte.
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .expect("request");
        let mut reply = [0u8; 512];
        let n = tcp.read(&mut reply).await.expect("reply");
        assert!(reply[..n].starts_with(b"HTTP/1.1 200"));
    }
    tcp.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("first line");
    let mut lines = 1;
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return lines,
                Ok(_) => panic!("a dribbled head got an answer"),
            },
            () = tokio::time::sleep(pause) => {
                if tcp.write_all(format!("x-dribble-{lines}: 1\r\n").as_bytes()).await.is_err() {
                    return lines;
                }
                lines += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_dribblers_are_closed_at_the_head_deadline_while_others_are_served() {
    const DRIBBLERS: usize = 300;
    let mut process = blocking(|| {
        Process::start(&toml(
            "[server.limits]\nhead_timeout_ms = 1500\nmax_connections_per_address = 1000",
        ))
    });
    let addr = process.addr;
    let dribblers: Vec<_> = (0..DRIBBLERS)
        .map(|i| {
            tokio::spawn(dribble(
                addr,
                Duration::from_millis(200),
                i % 10 == 0, // some dribble the second head of a keep-alive connection
            ))
        })
        .collect();
    // Meanwhile a normal client keeps getting answers, on fresh and reused connections, and
    // an SSE stream opened now outlives the head deadline.
    let client = Client::new(addr);
    let reply = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["id"].as_str().expect("id").to_owned();
    let stream_url = reply.json["stream_url"].as_str().expect("url").to_owned();
    let mut stream = client
        .stream(client.get(&stream_url))
        .await
        .expect("stream");
    stream.expect_retry().await;
    let mut served = 0;
    while dribblers.iter().any(|d| !d.is_finished()) {
        let reply = client.send_call(client.get("/healthz")).await;
        assert_eq!(reply.status, StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for dribbler in dribblers {
        let lines = within("a dribbler closed", dribbler).await.expect("task");
        assert!(lines >= 1);
    }
    assert!(served > 0);
    // The stream, open longer than the head deadline, still delivers.
    let reply = client
        .send_call(
            client
                .post(&format!("/v2/sessions/{id}/events"))
                .bearer(KEY)
                .json(&json!({"events": [{"kind": "delta", "data": {"n": 1}}]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let event = stream
        .next_event()
        .await
        .expect("an event after the deadline");
    assert_eq!(event.json(), json!({"n": 1}));
    // An idle keep-alive connection is not a late head: it is served after the deadline.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 512];
    for _ in 0..2 {
        idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .expect("request");
        let n = within("an answer", idle.read(&mut buf))
            .await
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        tokio::time::sleep(Duration::from_millis(1_800)).await;
    }
    let text = metrics(&process).await;
    let timeouts = metric(
        &text,
        "agentgate_connection_timeouts_total{reason=\"head\"}",
    )
    .expect("head timeouts");
    assert!(timeouts >= DRIBBLERS as f64, "{timeouts}\n{text}");
    let _ = process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_cap_refuses_the_connection_over_it() {
    let mut process =
        blocking(|| Process::start(&toml("[server.limits]\nmax_connections_per_address = 3")));
    let addr = process.addr;
    let mut held = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .expect("request");
        let n = within("an answer", tcp.read(&mut buf)).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    // The fourth is closed before it is read.
    let mut over = TcpStream::connect(addr).await.expect("the TCP accept");
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await;
    let n = within("the refusal", over.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "answered over the cap: {:?}", &buf[..n]);
    let text = metrics(&process).await;
    assert_eq!(
        metric(
            &text,
            "agentgate_connections_refused_total{reason=\"max_connections_per_address\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "agentgate_connections_open"), Some(3.0));
    // One closes; its place is free again once the gateway has seen it go.
    drop(held.pop());
    let admin = Client::new(process.admin.expect("admin"));
    within("the slot freed", async {
        loop {
            let text = admin.send_call(admin.get("/metrics")).await.text;
            if metric(&text, "agentgate_connections_open") == Some(2.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut again = TcpStream::connect(addr).await.expect("connect");
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("request");
    let n = within("an answer", again.read(&mut buf))
        .await
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let _ = process.terminate();
}

/// Behind a load balancer every connection comes from its address: the per-address cap
/// must not count the balancer, but each client behind it (the right-most untrusted
/// `X-Forwarded-For` hop), by its requests in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_cap_counts_each_forwarded_client() {
    let mut process = blocking(|| {
        Process::start(&toml(
            "[server.limits]\nmax_connections_per_address = 2\ntrusted_proxies = [\"127.0.0.1\"]",
        ))
    });
    let client = Client::new(process.addr);
    let created = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let url = created.json["stream_url"].as_str().expect("url").to_owned();
    let from = |xff: &str| client.get(&url).header("x-forwarded-for", xff);
    // Two streams for one client, and a third from another: three connections from the
    // balancer's one address, over a cap of two — the balancer is not capped.
    let mut held = Vec::new();
    for xff in ["203.0.113.7", "198.51.100.1, 203.0.113.7", "203.0.113.8"] {
        match client.stream(from(xff)).await {
            Ok(stream) => held.push(stream),
            Err(reply) => panic!("refused for {xff}: {} {}", reply.status, reply.text),
        }
    }
    // A third request of 203.0.113.7 is over its cap, whatever it wrote left of the hop the
    // balancer appended.
    for xff in ["203.0.113.7", "192.0.2.99, 203.0.113.7"] {
        let refused = client.send_call(from(xff)).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{xff}");
        assert_eq!(
            refused.error_code(),
            "too_many_requests",
            "{}",
            refused.text
        );
        assert!(
            refused.error_message().contains("203.0.113.7"),
            "{}",
            refused.text
        );
        assert_eq!(refused.header("retry-after"), Some("1"));
    }
    // Another client behind the balancer is served meanwhile.
    let other = client
        .send_call(
            client
                .get("/healthz")
                .header("x-forwarded-for", "203.0.113.9"),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    let text = metrics(&process).await;
    assert_eq!(
        metric(
            &text,
            "agentgate_connections_refused_total{reason=\"max_connections_per_address\"}"
        ),
        Some(2.0),
        "{text}"
    );
    // One of the client's streams ends: its place is free again.
    drop(held.remove(0));
    within("the place freed", async {
        loop {
            match client.stream(from("203.0.113.7")).await {
                Ok(stream) => {
                    held.push(stream);
                    break;
                }
                Err(reply) => assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = process.terminate();
}

/// A client that fails its TLS handshake makes pingora log an ERROR line; at the edge anyone
/// could fill the logs that way. The failures are counted, and few are logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_counted_not_logged_each() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let cert = ca.issue(dir.path(), "edge", &["127.0.0.1"]);
    let mut process = blocking(|| Process::start(&tls_toml(&[&cert])));
    let tls = *process.addrs.last().expect("the TLS listener");
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(tls).await.expect("connect");
        // Not a TLS ClientHello.
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let _ = within("the refusal", tcp.read(&mut buf)).await;
    }
    // The listener still serves a real client.
    let good = connect(tls, "127.0.0.1", ca.client(&[b"h2"]))
        .await
        .expect("a real client's handshake");
    let mut send = h2_client(good).await;
    let (status, _) = h2_call(&mut send, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let admin = Client::new(process.admin.expect("admin"));
    let series = "agentgate_connection_errors_total{reason=\"tls_handshake\"}";
    within("50 failures counted", async {
        loop {
            let text = admin.send_call(admin.get("/metrics")).await.text;
            if metric(&text, series) == Some(50.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = process.terminate();
    let output = process.output();
    let logged = output.matches("Downstream handshake error").count();
    assert!(
        (1..50).contains(&logged),
        "{logged} handshake failures logged:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_a_cleartext_listener_is_opt_in() {
    // Off (the default): the HTTP/2 preface is not an HTTP/1.1 request.
    let off = blocking(|| Process::start(&toml("")));
    let mut tcp = TcpStream::connect(off.addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    let mut buf = [0u8; 64];
    let n = within("the answer to a preface", tcp.read(&mut buf))
        .await
        .unwrap_or(0);
    assert!(
        n == 0 || buf[..n].starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // On: requests and streams multiplexed over one cleartext connection.
    let on =
        blocking(|| Process::start(&toml("").replacen("[server]\n", "[server]\nh2c = true\n", 1)));
    let client = Client::h2c(on.addr);
    let created = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.version, Version::HTTP_2);
    let url = created.json["stream_url"].as_str().expect("url");
    let head = client.unread(client.get(url)).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.version(), Version::HTTP_2);
    let mut stream = client.stream(client.get(url)).await.expect("stream");
    assert_eq!(stream.version, Version::HTTP_2);
    stream.expect_retry().await;
}

//! [`PageOrigin`]: a test origin that serves one HTML page and passes on what the page
//! reports, so a test can follow a real browser running it.
//!
//! The page is served at `/page` (through the gateway, by an upstream route, so the agent
//! API is same-origin to it); it reports with `POST /report?kind=KIND` and a JSON body.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::within;
use crate::edge::peers;
use crate::origin::{Origin, text};

/// What the page posted to `/report`.
#[derive(Debug)]
struct Report {
    kind: String,
    body: Value,
}

/// An origin serving one page and collecting its reports.
pub struct PageOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<Report>,
    _origin: Origin,
}

impl PageOrigin {
    /// Serves `page` (HTML) at `/page`; every other request is a report.
    pub async fn start(page: &'static str) -> Self {
        let (report_tx, reports) = mpsc::unbounded_channel();
        let origin = Origin::with_handler(move |req| {
            let report_tx = report_tx.clone();
            Box::pin(async move {
                if req.uri().path() == "/page" {
                    let mut page = text(StatusCode::OK, Bytes::from_static(page.as_bytes()));
                    page.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    return page;
                }
                let kind = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("kind="))
                    .unwrap_or("")
                    .to_owned();
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let body = body.ok().and_then(|b| serde_json::from_slice(&b).ok());
                let _ = report_tx.send(Report {
                    kind,
                    body: body.unwrap_or(Value::Null),
                });
                text(StatusCode::OK, "ok")
            })
        })
        .await;
        Self {
            addr: origin.addr,
            reports,
            _origin: origin,
        }
    }

    /// The routes of a gateway in front of the page (TOML for
    /// [`Edge::from_toml`](crate::edge::Edge::from_toml)): the agent API under `/v2/`, and
    /// every other path to this origin.
    pub fn routes(&self) -> String {
        format!(
            r#"
[[routes]]
name = "agent"
kind = "agent"
path_prefix = "/v2/"
[[routes]]
name = "site"
kind = "upstream"
path_prefix = "/"
upstream = "site"
[upstreams.site]
peers = [{}]
"#,
            peers(&[self.addr])
        )
    }

    /// Waits (bounded by [`within`]) for the page's next report of `kind`, skipping others,
    /// and returns its body.
    pub async fn next_report(&mut self, kind: &str) -> Value {
        loop {
            let report = within(&format!("the page to report {kind}"), self.reports.recv())
                .await
                .expect("origin alive");
            if report.kind == kind {
                return report.body;
            }
        }
    }
}

//! Edge-proxy tests: the pingora gateway in front of real loopback origins (small hyper
//! servers, [`origin`]), through both route kinds — upstream routes (load balancing, health
//! checks, failover, admission) and in-process tower services (the agent API, an axum
//! router).
//!
//! No test asserts a duration. "Unbuffered", "cancelled" and "held" are proven by
//! synchronisation: the origin waits for the test before it goes on, so a proxy that
//! buffers or holds on deadlocks into a bounded wait ([`client::within`]) that fails with a
//! message. Every server binds `127.0.0.1:0`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../e2e/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../support/browser.rs"]
mod headless;
#[path = "../support/tls.rs"]
mod tls;

mod edge;
mod origin;
mod page_origin;

mod admission;
mod axum_route;
mod balance;
mod browser;
mod browser_h2;
mod canary;
mod cancel;
mod coalesce;
mod h2;
mod health;
mod paths;
mod priority_queue;
mod rate_limit;
mod routes;
mod sse;
mod upload;
mod upstream;
mod upstream_tls;

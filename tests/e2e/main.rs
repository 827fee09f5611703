//! End-to-end tests: the real gateway on `127.0.0.1:0`, driven over HTTP, against the
//! memory engine and private `redis-server` processes (never 6379, never a fixed port).
//!
//! No test asserts a duration: ordering and liveness are proven by waiting for frames, so
//! wrong behaviour turns into a bounded wait that fails with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod client;
mod gateway;

mod access_log;
mod admin;
mod admin_trust;
mod auth;
mod bad_input;
mod durable;
mod edge_listener;
mod existence_cache;
mod failover;
mod fanout;
mod hostile_tokens;
mod idempotency;
mod lifecycle;
mod multiplex;
mod node_kill;
mod process;
mod quotas;
mod readme;
mod redis_outage;
mod reload;
mod request_heads;
mod resume;
mod retention_gap;
mod round_trips;
mod runtime_dir;
mod scale_out;
mod secrets_in_logs;
mod session_metrics;
mod shared_rate_limit;
mod shutdown;
mod slow_client;
mod status_page;
mod tools;
mod tools_budget;
mod tracing;

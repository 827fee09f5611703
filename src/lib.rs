//! agentgate: an edge gateway for streaming LLM-agent sessions.
//!
//! Agents create sessions, append events and complete them over a JSON API; browsers and
//! apps follow a session live over Server-Sent Events and resume exactly where they left
//! off. [`app`] is the one place where configuration becomes stores, handlers and services;
//! [`stack`] shows each route kind's whole request path, layer by layer.
//!
//! - [`api`]: the agent API as a tower service, one module per handler.
//! - [`store`]: the `SessionStore` trait, the Redis engine and the embedded memory engine.
//! - [`tools`]: tool registry, dependency-graph executor, CPU worker pool, HTTP tools.
//! - [`agent`]: who runs a session (the demo agent, or external agents).
//! - [`auth`]: API keys and per-session stream tokens.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: the admin listener (metrics, health, readiness, effective config, the live
//!   status page and its feeds).
//! - [`loadtest`]: the load generator behind `agentgate loadtest`.
//! - [`server`]: serving over HTTP.
//! - [`runtime_dir`], [`pid_file`]: the private directory of the pid file and upgrade socket.
//! - [`telemetry`]: OTLP export of request spans (`[telemetry]`, cargo feature `otlp`).

pub mod admin;
pub mod agent;
pub mod api;
pub mod app;
pub mod auth;
pub mod client_noise;
pub mod durable;
pub mod loadtest;
pub mod metrics;
pub mod pid_file;
pub mod redact;
pub mod runtime_dir;
pub mod server;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod tools;

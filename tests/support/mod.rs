//! Shared test harness: private `redis-server` processes on free loopback ports, headless
//! Chromium.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod tls;

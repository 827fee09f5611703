//! Shared test harness: private `redis-server` processes on free loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod redis_cluster;
pub mod redis_server;

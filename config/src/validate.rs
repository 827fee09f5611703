//! The rules a parsed [`Config`] must satisfy beyond its types.
//!
//! [`Config::validate`] checks everything and reports every broken rule, so one run of the
//! gateway shows all the fixes a file needs.

use std::collections::HashMap;

use crate::error::ValidationError;
use crate::schema::{Config, Dispatch, StoreKind};

/// Shortest accepted API key, in characters.
const MIN_API_KEY_LEN: usize = 16;
/// Shortest accepted stream-token secret, in bytes (256 bits for HMAC-SHA256).
const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Checks the rules documented on each field and returns every broken one.
    ///
    /// Sections that are switched off are not checked: `[store.redis]` only when
    /// `store.kind = "redis"`, `agent.demo.deltas` only when `agent.dispatch = "demo"`.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut problems = Problems::default();
        self.check_server(&mut problems);
        self.check_auth(&mut problems);
        self.check_store(&mut problems);
        self.check_sse(&mut problems);
        self.check_agent(&mut problems);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(problems.0)
        }
    }

    fn check_server(&self, p: &mut Problems) {
        let s = &self.server;
        p.require(
            s.max_body_bytes >= 1024,
            "server.max_body_bytes",
            "must be at least 1024",
        );
        p.require(
            s.shutdown_grace_secs <= 3600,
            "server.shutdown_grace_secs",
            "must be at most 3600 (one hour)",
        );
    }

    fn check_auth(&self, p: &mut Problems) {
        let a = &self.auth;
        p.require(
            !a.api_keys.is_empty(),
            "auth.api_keys",
            "at least one API key is required",
        );
        for (i, api_key) in a.api_keys.iter().enumerate() {
            let key = format!("auth.api_keys[{i}]");
            // Messages never include the key itself: error output ends up in logs.
            if api_key.chars().any(char::is_whitespace) {
                p.push(&key, "must not contain whitespace");
            } else if !api_key.chars().all(|c| c.is_ascii_graphic()) {
                p.push(&key, "must contain only visible ASCII characters");
            }
            if api_key.chars().count() < MIN_API_KEY_LEN {
                p.push(
                    &key,
                    format!("must be at least {MIN_API_KEY_LEN} characters long"),
                );
            }
        }
        for (i, first) in duplicates(&a.api_keys) {
            p.push(
                &format!("auth.api_keys[{i}]"),
                format!("duplicates auth.api_keys[{first}]"),
            );
        }
        p.require(
            a.stream_token_secret.len() >= MIN_SECRET_BYTES,
            "auth.stream_token_secret",
            format!(
                "must be at least {MIN_SECRET_BYTES} bytes (it is {})",
                a.stream_token_secret.len()
            ),
        );
        p.require(
            a.stream_token_ttl_secs >= 1,
            "auth.stream_token_ttl_secs",
            "must be at least 1",
        );
    }

    fn check_store(&self, p: &mut Problems) {
        let s = &self.store;
        p.require(
            s.events_maxlen >= 1,
            "store.events_maxlen",
            "must be at least 1",
        );
        p.require(
            s.retention_secs >= 1,
            "store.retention_secs",
            "must be at least 1",
        );
        p.require(
            s.session_ttl_secs >= 1,
            "store.session_ttl_secs",
            "must be at least 1",
        );
        if s.kind != StoreKind::Redis {
            return;
        }
        let r = &s.redis;
        if r.urls.is_empty() {
            p.push(
                "store.redis.urls",
                "at least one URL is required when store.kind = \"redis\"",
            );
        } else if !r.cluster && r.urls.len() != 1 {
            p.push(
                "store.redis.urls",
                format!(
                    "exactly one URL is required when cluster = false (found {}); \
                     set store.redis.cluster = true to use several seed nodes",
                    r.urls.len()
                ),
            );
        }
        for (i, url) in r.urls.iter().enumerate() {
            let key = format!("store.redis.urls[{i}]");
            match url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
            {
                None => p.push(&key, "must start with redis:// or rediss://"),
                Some("") => p.push(&key, "must name a host after the scheme"),
                Some(_) => {}
            }
        }
        for (i, first) in duplicates(&r.urls) {
            p.push(
                &format!("store.redis.urls[{i}]"),
                format!("duplicates store.redis.urls[{first}]"),
            );
        }
        p.require(
            r.timeout_ms >= 1,
            "store.redis.timeout_ms",
            "must be at least 1",
        );
        p.require(
            r.connect_timeout_ms >= 1,
            "store.redis.connect_timeout_ms",
            "must be at least 1",
        );
    }

    fn check_sse(&self, p: &mut Problems) {
        let s = &self.sse;
        p.require(
            s.heartbeat_secs >= 1,
            "sse.heartbeat_secs",
            "must be at least 1",
        );
        p.require(s.retry_ms >= 1, "sse.retry_ms", "must be at least 1");
        p.require(
            (1..=10_000).contains(&s.replay_batch),
            "sse.replay_batch",
            "must be between 1 and 10000",
        );
    }

    fn check_agent(&self, p: &mut Problems) {
        let a = &self.agent;
        if a.dispatch == Dispatch::Demo {
            p.require(
                a.demo.deltas >= 1,
                "agent.demo.deltas",
                "must be at least 1 when agent.dispatch = \"demo\"",
            );
        }
        p.require(
            a.demo.pace_ms <= 60_000,
            "agent.demo.pace_ms",
            "must be at most 60000 (one minute)",
        );
    }
}

/// `(index, index of its first occurrence)` for every repeated element of `items`.
fn duplicates(items: &[String]) -> Vec<(usize, usize)> {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let first = *first_index.entry(item).or_insert(i);
        if first != i {
            repeats.push((i, first));
        }
    }
    repeats
}

/// The broken rules found so far.
#[derive(Default)]
struct Problems(Vec<ValidationError>);

impl Problems {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ValidationError::new(key, message));
    }

    fn require(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.push(key, message);
        }
    }
}

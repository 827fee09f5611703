//! The rules a parsed [`Config`] must satisfy beyond its types, one file per section:
//! `server`, `auth`, `store`, `sse` (with `[existence_cache]`), `agent`, `routes`,
//! `upstreams`, `tools`, `telemetry`. The layers' policies (a route's `rate_limit` and
//! `priority_queue`, `sse.fanout`, `sse.multiplex`, `existence_cache`) are checked by their
//! own `validate()` (`Problems::policy`).
//!
//! [`Config::validate`] checks everything and reports every broken rule, so one run of the
//! gateway shows all the fixes a file needs.

mod agent;
mod auth;
mod routes;
mod server;
mod sse;
mod store;
mod telemetry;
mod tools;
mod upstreams;

use std::collections::HashMap;
use std::hash::Hash;

use agentgate_middleware::policy::PolicyError;

use crate::error::ValidationError;
use crate::schema::Config;

/// Shortest accepted API key (and admin token), in characters.
const MIN_API_KEY_LEN: usize = 16;
/// Most accepted `server.threads` and `tools.workers`.
const MAX_THREADS: usize = 1024;

impl Config {
    /// Checks the rules documented on each field and returns every broken one.
    ///
    /// Sections that are switched off are not checked: `[store.redis]` only when
    /// `store.kind = "redis"`, `agent.demo.deltas` only when `agent.dispatch = "demo"`.
    /// Upstreams are checked whether or not a route uses them.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut problems = Problems::default();
        self.check_server(&mut problems);
        self.check_auth(&mut problems);
        self.check_store(&mut problems);
        self.check_sse(&mut problems);
        self.check_agent(&mut problems);
        self.check_existence_cache(&mut problems);
        self.check_routes(&mut problems);
        self.check_upstreams(&mut problems);
        self.check_tools(&mut problems);
        self.check_telemetry(&mut problems);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(problems.0)
        }
    }
}

/// A non-empty lower-case header name: ASCII letters, digits and `-`.
fn is_lower_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The rules shared by lists of bearer secrets (`auth.api_keys`, `server.admin_tokens`):
/// visible ASCII without whitespace, at least [`MIN_API_KEY_LEN`] characters, no duplicates.
/// Messages never include a secret itself: error output ends up in logs.
fn check_secrets(p: &mut Problems, list: &str, secrets: &[String]) {
    for (i, secret) in secrets.iter().enumerate() {
        let key = format!("{list}[{i}]");
        if secret.chars().any(char::is_whitespace) {
            p.push(&key, "must not contain whitespace");
        } else if !secret.chars().all(|c| c.is_ascii_graphic()) {
            p.push(&key, "must contain only visible ASCII characters");
        }
        if secret.chars().count() < MIN_API_KEY_LEN {
            p.push(
                &key,
                format!("must be at least {MIN_API_KEY_LEN} characters long"),
            );
        }
    }
    for (i, first) in duplicates(secrets.iter().enumerate()) {
        p.push(
            &format!("{list}[{i}]"),
            format!("duplicates {list}[{first}]"),
        );
    }
}

/// Whether `host` is a host name, IPv4 address or bracketed IPv6 address, with no scheme,
/// port or path.
fn is_plain_host(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
    }
}

/// `(index, index of its first occurrence)` for every repeated item of `(index, item)` pairs.
fn duplicates<T: Eq + Hash>(items: impl IntoIterator<Item = (usize, T)>) -> Vec<(usize, usize)> {
    let mut first_index: HashMap<T, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for (i, item) in items {
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

    /// A layer policy's `validate()` result, the policy living at `table`
    /// (`routes[0].rate_limit`): the broken key is reported under it.
    fn policy(&mut self, table: &str, checked: Result<(), PolicyError>) {
        if let Err(error) = checked {
            self.push(
                &format!("{table}.{}", error.key()),
                error.problem().to_string(),
            );
        }
    }
}

//! Credentials published with agentgate: the example API keys and stream-token secrets in
//! this repository's reference configuration, README, examples, benchmarks and crate docs.
//!
//! Anyone can read them, so [`Config::validate`](crate::Config::validate) accepts them only
//! while the gateway listens on loopback alone (a developer's machine, a benchmark). A test
//! (`config/tests/auth.rs`) scans the published files and fails when one
//! carries a value missing from [`PUBLISHED_CREDENTIALS`].

use crate::schema::Config;

/// Every API key and stream-token secret that appears in agentgate's published files.
pub const PUBLISHED_CREDENTIALS: &[&str] = &[
    // config/agentgate.toml, README.md, examples/, bench/scenarios/.
    "dev-api-key-change-me",
    "demo-stream-token-secret-change-me-in-production",
    // bench/*.sh.
    "bench-api-key-0123456789",
    "bench-secret-bench-secret-bench-secret",
    // fuzz/checks/gateway.rs (the fuzz targets' in-process gateway).
    "fuzz-api-key-0123456789abcdef",
    "fuzz-stream-token-secret-0123456789abcdef",
    // The agentgate-config crate docs.
    "0123456789abcdef",
    "0123456789abcdef0123456789abcdef",
];

/// How to make real credentials; the end of every refusal of a published one.
pub const GENERATE_HINT: &str = "generate a real one, e.g. with `openssl rand -base64 48`";

/// Whether `value` is one of the [`PUBLISHED_CREDENTIALS`].
pub fn is_published(value: &str) -> bool {
    PUBLISHED_CREDENTIALS.contains(&value)
}

impl Config {
    /// The keys (`auth.api_keys[0]`, `auth.stream_token_secret`...) whose value is one of the
    /// [`PUBLISHED_CREDENTIALS`]. Validation refuses them unless every listener is loopback;
    /// on loopback the gateway warns about them.
    pub fn published_credentials(&self) -> Vec<String> {
        let a = &self.auth;
        let mut keys = published_in("auth.api_keys", &a.api_keys);
        if is_published(&a.stream_token_secret) {
            keys.push("auth.stream_token_secret".to_owned());
        }
        keys.extend(published_in(
            "auth.stream_token_secrets",
            &a.stream_token_secrets,
        ));
        keys
    }

    /// Whether every public listener (`server.listen`, `server.tls.listen`) is on a
    /// loopback address (reachable from this machine only).
    pub fn listens_on_loopback_only(&self) -> bool {
        self.server
            .public_addrs()
            .all(|addr| addr.ip().is_loopback())
    }
}

/// `list[i]` for every published value of the list `list`.
fn published_in(list: &str, values: &[String]) -> Vec<String> {
    values
        .iter()
        .enumerate()
        .filter(|(_, value)| is_published(value))
        .map(|(i, _)| format!("{list}[{i}]"))
        .collect()
}

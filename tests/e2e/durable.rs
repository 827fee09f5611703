//! Durable Streams (`kind = "durable"`): the protocol's official conformance suite (npm
//! `@durable-streams/server-conformance-tests`) and its TypeScript client
//! (`@durable-streams/client`), run by node against the real binary on each store.
//!
//! The npm project is `tests/durable` (`npm ci` there; scripts/test does it). A suite test
//! that fails here fails the test, except those `tests/durable/expected-failures.txt`
//! names (each one explained in README.md, "Durable Streams"); a listed test that passes
//! fails the test too, so the list cannot rot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;
use crate::support::redis_server::RedisServer;

/// The npm project holding the suite, the client and the interop tests.
fn npm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durable")
}

/// A gateway serving streams under `/v1/stream/` (the suite's paths), with `store` and
/// `access` (`public` for the suite, which sends no credentials; `api_key` for the client).
fn config(store: &str, access: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
{store}
[[routes]]
name = "streams"
kind = "durable"
path_prefix = "/v1/stream/"
[routes.durable]
write = "{access}"
read = "{access}"
long_poll_timeout_ms = 1000
max_append_bytes = 16777216
max_read_bytes = 4194304
"#
    )
}

fn redis_store(redis: &RedisServer) -> String {
    format!(
        "[store]\nkind = \"redis\"\n[store.redis]\nurls = [\"{}\"]\n",
        redis.url()
    )
}

/// Runs vitest with `config_file` in the npm project, `env` set; returns every test's
/// full name and status from its JSON report.
fn vitest(config_file: &str, env: &[(&str, String)]) -> Vec<(String, String)> {
    let dir = npm_dir();
    assert!(
        dir.join("node_modules/vitest").is_dir(),
        "the Durable Streams npm packages are not installed: run `npm ci` in {}",
        dir.display()
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("npx")
        .current_dir(&dir)
        .args(["vitest", "run", "--config", config_file, "--reporter=json"])
        .arg(format!("--outputFile={}", report.path().display()))
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .expect("npx (node and npm) must be installed");
    let text = std::fs::read_to_string(report.path()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "no vitest report ({e}); vitest said:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut tests = Vec::new();
    for file in json["testResults"].as_array().into_iter().flatten() {
        for test in file["assertionResults"].as_array().into_iter().flatten() {
            let name = test["fullName"].as_str().unwrap_or_default().to_owned();
            let status = test["status"].as_str().unwrap_or_default().to_owned();
            tests.push((name, status));
        }
    }
    assert!(
        !tests.is_empty(),
        "vitest ran no tests:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    tests
}

/// The suite's tests we expect to fail (see the module docs).
fn expected_failures() -> BTreeSet<String> {
    std::fs::read_to_string(npm_dir().join("expected-failures.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs the whole conformance suite against `gateway`.
fn conformance(gateway: &Process, store: &str) {
    let url = format!("http://{}", gateway.addr);
    let tests = vitest(
        "vitest.conformance.config.mjs",
        &[("CONFORMANCE_TEST_URL", url)],
    );
    let expected = expected_failures();
    let failed: BTreeSet<String> = tests
        .iter()
        .filter(|(_, status)| status == "failed")
        .map(|(name, _)| name.clone())
        .collect();
    let unexpected: Vec<&String> = failed.difference(&expected).collect();
    let passing_listed: Vec<&String> = tests
        .iter()
        .filter(|(name, status)| status == "passed" && expected.contains(name))
        .map(|(name, _)| name)
        .collect();
    let passed = tests.iter().filter(|(_, s)| s == "passed").count();
    eprintln!(
        "durable conformance on {store}: {passed} passed, {} failed ({} expected), {} other, of {}",
        failed.len(),
        failed.len() - unexpected.len(),
        tests.len() - passed - failed.len(),
        tests.len()
    );
    assert!(
        unexpected.is_empty(),
        "{store}: conformance tests failed: {unexpected:#?}"
    );
    assert!(
        passing_listed.is_empty(),
        "{store}: tests listed in expected-failures.txt now pass (remove them): {passing_listed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_passes_on_the_memory_store() {
    blocking(|| {
        let gateway = Process::start(&config("[store]\nkind = \"memory\"", "public"));
        conformance(&gateway, "memory");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_passes_on_the_redis_store() {
    blocking(|| {
        let redis = RedisServer::start();
        let gateway = Process::start(&config(&redis_store(&redis), "public"));
        conformance(&gateway, "redis");
    });
}

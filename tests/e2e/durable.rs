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
/// `access` (`public` for the suite, which sends no credentials; `api_key` for the client),
/// and `extra` `[routes.durable]` keys.
fn config(store: &str, access: &str, extra: &str) -> String {
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
{extra}
"#
    )
}

const MEMORY: &str = "[store]\nkind = \"memory\"";

fn redis_store(redis: &RedisServer) -> String {
    format!(
        "[store]\nkind = \"redis\"\n[store.redis]\nurls = [\"{}\"]\n",
        redis.url()
    )
}

/// Runs vitest with `config_file` in the npm project, `env` set; returns every test's
/// full name and status from its JSON report, and whether vitest called the run a success
/// (false also on errors outside any test, such as an unhandled rejection).
fn vitest(config_file: &str, env: &[(&str, String)]) -> (Vec<(String, String)>, bool) {
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
    (tests, json["success"].as_bool() == Some(true))
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
    let (tests, _) = vitest(
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
        let gateway = Process::start(&config(MEMORY, "public", ""));
        conformance(&gateway, "memory");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_passes_on_the_redis_store() {
    blocking(|| {
        let redis = RedisServer::start();
        let gateway = Process::start(&config(&redis_store(&redis), "public", ""));
        conformance(&gateway, "redis");
    });
}

/// Runs the client interop tests (`tests/durable/interop.test.mjs`) against `gateway`: a
/// reader through connection cuts (long-poll: a proxy cutting every connection; SSE: the
/// gateway ending each response after `sse_max_ms`) gets every message exactly once, and an
/// idempotent producer whose applied appends lose their responses duplicates nothing.
fn interop(gateway: &Process, store: &str) {
    let (tests, success) = vitest(
        "vitest.interop.config.mjs",
        &[
            ("DURABLE_URL", format!("http://{}/v1/stream", gateway.addr)),
            ("DURABLE_KEY", KEY.to_owned()),
        ],
    );
    let failed: Vec<&(String, String)> = tests.iter().filter(|(_, s)| s != "passed").collect();
    assert!(
        failed.is_empty(),
        "{store}: interop tests did not pass: {failed:#?}"
    );
    assert_eq!(tests.len(), 3, "{store}: {tests:#?}");
    assert!(
        success,
        "{store}: vitest reported errors outside the tests (unhandled)"
    );
}

/// Writers and readers need the API key; SSE responses end every 300 ms.
const INTEROP: &str = "sse_max_ms = 300";

#[tokio::test(flavor = "multi_thread")]
async fn client_follows_through_cuts_and_its_producer_never_duplicates_on_memory() {
    blocking(|| {
        let gateway = Process::start(&config(MEMORY, "api_key", INTEROP));
        interop(&gateway, "memory");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn client_follows_through_cuts_and_its_producer_never_duplicates_on_redis() {
    blocking(|| {
        let redis = RedisServer::start();
        let gateway = Process::start(&config(&redis_store(&redis), "api_key", INTEROP));
        interop(&gateway, "redis");
    });
}

/// The fenced `lang` blocks of the README's "Durable Streams" section.
fn readme_blocks(lang: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Durable Streams\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Durable Streams section");
    let fence = format!("```{lang}\n");
    section
        .split(fence.as_str())
        .skip(1)
        .filter_map(|block| block.split("```\n").next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_client_example_runs_as_written() {
    let route = readme_blocks("toml").concat();
    let example = readme_blocks("js").concat();
    assert!(route.contains("kind = \"durable\"") && example.contains("localhost:8080"));
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[auth]\napi_keys = [\"dev-api-key-change-me\"]\n\
         stream_token_secret = \"{SECRET}\"\n{route}"
    );
    blocking(|| {
        let gateway = Process::start(&toml);
        // In the npm project, so the client package resolves.
        let script = tempfile::Builder::new()
            .suffix(".mjs")
            .tempfile_in(npm_dir())
            .unwrap();
        std::fs::write(
            script.path(),
            example.replace("localhost:8080", &gateway.addr.to_string()),
        )
        .unwrap();
        let output = Command::new("node").arg(script.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the README example failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("'Hello'") && stdout.contains("'world'"),
            "{stdout}"
        );
    });
}

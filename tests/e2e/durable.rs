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
use crate::support::redis_cluster::RedisCluster;
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

/// On a 3-master Cluster, where notices travel by sharded pub/sub (`SSUBSCRIBE` per watched
/// stream): the live-read tests pass only if the streams' writes publish in their shard (a
/// plain `PUBLISH` reaches no sharded subscriber; this failed so before the fix).
#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_passes_on_a_redis_cluster() {
    blocking(|| {
        let cluster = RedisCluster::start();
        let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
        let store = format!(
            "[store]\nkind = \"redis\"\n[store.redis]\nurls = [{}]\ncluster = true\n",
            urls.join(", ")
        );
        let gateway = Process::start(&config(&store, "public", ""));
        conformance(&gateway, "redis-cluster");
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

/// Hostile and malformed requests on a durable route: each answered with its status and a
/// JSON error naming the problem, and nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_json_errors_and_write_nothing() {
    use http::Method;

    use crate::client::Client;

    let toml = config(
        MEMORY,
        "api_key",
        "max_stream_bytes = 2048\nmax_ttl_secs = 3600",
    )
    .replace("max_append_bytes = 16777216", "max_append_bytes = 1024");
    let gateway = blocking(|| Process::start(&toml));
    let client = Client::new(gateway.addr);
    let put = |path: &str| client.call(Method::PUT, path).bearer(KEY);
    let post = |path: &str| client.post(path).bearer(KEY);
    let ok = client
        .send_call(put("/v1/stream/h").header("content-type", "text/plain"))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);

    // (request, status, error code, text the message must contain)
    let cases = [
        (
            client.call(Method::PUT, "/v1/stream/x"),
            401,
            "missing_credentials",
            "credentials",
        ),
        (
            client.get("/v1/stream/h"),
            401,
            "missing_credentials",
            "credentials",
        ),
        (
            client
                .call(Method::PUT, "/v1/stream/x")
                .bearer("wrong-key-0123456789"),
            401,
            "invalid_credentials",
            "",
        ),
        (
            put("/v1/stream/x").header("stream-ttl", "03600"),
            400,
            "invalid_field",
            "Stream-TTL",
        ),
        (
            put("/v1/stream/x").header("stream-ttl", "99999"),
            400,
            "invalid_field",
            "at most 3600",
        ),
        (
            put("/v1/stream/x")
                .header("stream-ttl", "1")
                .header("stream-expires-at", "2030-01-01T00:00:00Z"),
            400,
            "invalid_field",
            "Stream-TTL",
        ),
        (
            put("/v1/stream/x").header("stream-expires-at", "soon"),
            400,
            "invalid_field",
            "Stream-Expires-At",
        ),
        (
            put("/v1/stream/x").header("stream-fork-offset", "1_1"),
            400,
            "invalid_field",
            "Stream-Forked-From",
        ),
        (
            put("/v1/stream/x").header("stream-forked-from", "/v2/sessions/elsewhere"),
            400,
            "invalid_field",
            "Stream-Forked-From",
        ),
        (
            put("/v1/stream/x").header("stream-forked-from", "/v1/stream/../h"),
            400,
            "invalid_field",
            "Stream-Forked-From",
        ),
        (
            put("/v1/stream/x")
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_body",
            "JSON",
        ),
        (
            put("/v1/stream/x").body(vec![b'a'; 1025]),
            413,
            "body_too_large",
            "1024",
        ),
        (
            post("/v1/stream/h").header("content-type", "text/plain"),
            400,
            "invalid_body",
            "empty",
        ),
        (
            post("/v1/stream/h").body("x"),
            400,
            "invalid_field",
            "Content-Type",
        ),
        (
            post("/v1/stream/h")
                .header("content-type", "application/json")
                .body("1"),
            409,
            "content_type_mismatch",
            "text/plain",
        ),
        (
            post("/v1/stream/h")
                .header("content-type", "text/plain")
                .header("producer-id", "p")
                .body("x"),
            400,
            "invalid_field",
            "Producer-Id",
        ),
        (
            post("/v1/stream/h")
                .header("content-type", "text/plain")
                .header("producer-id", "p")
                .header("producer-epoch", "1e3")
                .header("producer-seq", "0")
                .body("x"),
            400,
            "invalid_field",
            "Producer-Epoch",
        ),
        (
            post("/v1/stream/h")
                .header("content-type", "text/plain")
                .header("producer-id", &"p".repeat(257))
                .header("producer-epoch", "0")
                .header("producer-seq", "0")
                .body("x"),
            400,
            "invalid_field",
            "Producer-Id",
        ),
        (
            post("/v1/stream/none")
                .header("content-type", "text/plain")
                .body("x"),
            404,
            "stream_not_found",
            "",
        ),
        (
            client.get("/v1/stream/h?offset=abc").bearer(KEY),
            400,
            "invalid_field",
            "offset",
        ),
        (
            client.get("/v1/stream/h?offset=-1&offset=-1").bearer(KEY),
            400,
            "invalid_field",
            "offset",
        ),
        (
            client.get("/v1/stream/h?live=sse").bearer(KEY),
            400,
            "invalid_field",
            "offset",
        ),
        (
            client.get("/v1/stream/h?offset=-1&live=push").bearer(KEY),
            400,
            "invalid_field",
            "live",
        ),
        (
            client
                .get(&format!("/v1/stream/{}", "p".repeat(1100)))
                .bearer(KEY),
            414,
            "path_too_long",
            "1024",
        ),
        (
            client.call(Method::PATCH, "/v1/stream/h").bearer(KEY),
            405,
            "method_not_allowed",
            "",
        ),
    ];
    for (call, status, code, text) in cases {
        let reply = client.send_call(call).await;
        assert_eq!(reply.status, status, "{}", reply.text);
        assert_eq!(reply.error_code(), code, "{}", reply.text);
        assert!(reply.error_message().contains(text), "{}", reply.text);
    }
    // A chunked body past the bound is refused as it arrives, and nothing is appended.
    let chunks = (0..8)
        .map(|_| bytes::Bytes::from(vec![b'c'; 200]))
        .collect();
    let reply = client
        .send_call(post("/v1/stream/h").chunked_json(chunks))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    // Past the stream's bound: 413, nothing appended.
    for _ in 0..2 {
        let reply = client
            .send_call(
                post("/v1/stream/h")
                    .header("content-type", "text/plain")
                    .body(vec![b'a'; 1000]),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    let reply = client
        .send_call(
            post("/v1/stream/h")
                .header("content-type", "text/plain")
                .body(vec![b'a'; 100]),
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.error_code(), "stream_too_large");
    let head = client
        .send_call(client.call(Method::HEAD, "/v1/stream/h").bearer(KEY))
        .await;
    assert_eq!(
        head.header("stream-next-offset"),
        Some("0000000000000000_0000000000002000")
    );
    // No stream was created by any refused PUT.
    let missing = client
        .send_call(client.get("/v1/stream/x").bearer(KEY))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    drop(gateway);
}

//! `[auth]`: published example credentials, stream-token secret rotation, and the scan that
//! keeps the list of published credentials complete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use agentgate_config::{Config, ConfigError, PUBLISHED_CREDENTIALS, REFERENCE_TOML};

fn keys(errors: &[ConfigError]) -> Vec<&str> {
    errors.iter().filter_map(|e| e.key.as_deref()).collect()
}

/// The reference file with `listen` replaced.
fn reference_listening_on(listen: &str) -> String {
    REFERENCE_TOML.replace(
        "\nlisten = [\"127.0.0.1:8080\"]\n",
        &format!("\nlisten = {listen}\n"),
    )
}

#[test]
fn published_credentials_are_refused_off_loopback() {
    for listen in [
        r#"["0.0.0.0:8080"]"#,
        r#""[::]:8080""#,
        r#"["127.0.0.1:8080", "10.0.0.5:8080"]"#,
    ] {
        let src = reference_listening_on(listen);
        assert_ne!(src, REFERENCE_TOML, "listen line not found");
        let errors = Config::from_toml_str(&src).expect_err(listen);
        assert_eq!(
            keys(&errors),
            ["auth.api_keys[0]", "auth.stream_token_secret"],
            "{listen}: {errors:?}"
        );
        for e in &errors {
            assert!(e.message.contains("published"), "{e}");
            assert!(e.message.contains("openssl rand"), "{e}");
            assert!(e.line.is_some(), "{e}: located");
            // The message never repeats the value.
            assert!(!e.message.contains("change-me"), "{e}");
        }
    }
    for listen in [r#"["127.0.0.1:8080"]"#, r#"["127.0.0.2:0", "[::1]:8080"]"#] {
        let config = Config::from_toml_str(&reference_listening_on(listen)).expect(listen);
        assert_eq!(
            config.published_credentials(),
            ["auth.api_keys[0]", "auth.stream_token_secret"]
        );
    }
}

#[test]
fn real_credentials_serve_anywhere() {
    let src = r#"
[server]
listen = ["0.0.0.0:8080"]
[auth]
api_keys = ["k3N8t2vQ9xLm4pRw", "dev-api-key-change-me-NOT"]
stream_token_secrets = ["q8Zt3mN1vX4cR7pL2wK9sD6fH0jG5bYe", "demo-stream-token-secret-change-me-in-production-NOT"]
"#;
    let config = Config::from_toml_str(src).expect("valid");
    assert!(config.published_credentials().is_empty());
}

#[test]
fn a_published_secret_in_the_rotation_list_is_named() {
    let src = r#"
[server]
listen = "0.0.0.0:8080"
[auth]
api_keys = ["k3N8t2vQ9xLm4pRw"]
stream_token_secrets = ["q8Zt3mN1vX4cR7pL2wK9sD6fH0jG5bYe", "bench-secret-bench-secret-bench-secret"]
"#;
    let errors = Config::from_toml_str(src).expect_err("published");
    assert_eq!(keys(&errors), ["auth.stream_token_secrets[1]"]);
    assert_eq!((errors[0].line, errors[0].column), (Some(6), Some(61)));
}

#[test]
fn rotation_list_rules() {
    let both = r#"
[auth]
api_keys = ["k3N8t2vQ9xLm4pRw"]
stream_token_secret = "q8Zt3mN1vX4cR7pL2wK9sD6fH0jG5bYe"
stream_token_secrets = ["q8Zt3mN1vX4cR7pL2wK9sD6fH0jG5bYe-2"]
"#;
    let errors = Config::from_toml_str(both).expect_err("both");
    assert_eq!(keys(&errors), ["auth.stream_token_secret"]);
    assert!(errors[0].message.contains("not both"), "{}", errors[0]);

    let bad = format!(
        r#"
[auth]
api_keys = ["k3N8t2vQ9xLm4pRw"]
stream_token_secrets = ["short", "{long}", "{long}"]
"#,
        long = "x".repeat(40)
    );
    let errors = Config::from_toml_str(&bad).expect_err("bad list");
    assert_eq!(
        keys(&errors),
        [
            "auth.stream_token_secrets[0]",
            "auth.stream_token_secrets[2]"
        ]
    );
    assert!(
        errors[0].message.contains("at least 32 bytes"),
        "{}",
        errors[0]
    );
    assert!(errors[1].message.contains("duplicates"), "{}", errors[1]);

    let many: Vec<String> = (0..9)
        .map(|i| format!("\"{}{i}\"", "s".repeat(40)))
        .collect();
    let src = format!(
        "[auth]\napi_keys = [\"k3N8t2vQ9xLm4pRw\"]\nstream_token_secrets = [{}]\n",
        many.join(", ")
    );
    let errors = Config::from_toml_str(&src).expect_err("too many");
    assert_eq!(keys(&errors), ["auth.stream_token_secrets"]);

    let good = r#"
[auth]
api_keys = ["k3N8t2vQ9xLm4pRw"]
stream_token_secrets = ["new-secret-new-secret-new-secret-xx", "old-secret-old-secret-old-secret-xx"]
"#;
    let config = Config::from_toml_str(good).expect("valid");
    assert_eq!(
        config.auth.token_secrets().collect::<Vec<_>>(),
        [
            "new-secret-new-secret-new-secret-xx",
            "old-secret-old-secret-old-secret-xx"
        ]
    );
    let single = Config::from_toml_str(REFERENCE_TOML).expect("reference");
    assert_eq!(
        single.auth.token_secrets().collect::<Vec<_>>(),
        [single.auth.stream_token_secret.as_str()]
    );
}

/// The workspace root (this crate lives in `config/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The files a user reads and copies from: docs, configs, scripts, examples and benchmarks
/// — everything but test code, build output and VCS data. Of a crate's `src/`, only doc
/// comments count (what rustdoc publishes).
fn published_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | "tests" | ".git" | "node_modules") {
                published_files(&path, out);
            }
            continue;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let in_scripts = path
            .components()
            .any(|c| matches!(c.as_os_str().to_str(), Some("scripts" | ".ci")));
        if matches!(
            ext,
            "md" | "toml" | "sh" | "rs" | "yml" | "yaml" | "json" | "txt"
        ) || (ext.is_empty() && in_scripts)
        {
            out.push(path);
        }
    }
}

/// Every credential-looking value in `text`: `api_keys = [...]`, `stream_token_secret(s) =
/// ...`, `Bearer X`, `--api-key X`, `API_KEY=X`. Values built from variables (`$KEY`,
/// `{key}`, `<key>`) are not values.
fn credentials_in(text: &str) -> Vec<String> {
    let lists = regex::Regex::new(
        r#"(?:api_keys|stream_token_secrets?)\s*=\s*(\[[^\]\n]*\]|\\?"[^"\\\n]*\\?")"#,
    )
    .unwrap();
    let single =
        regex::Regex::new(r#"(?:\bBearer[ \t]+|--api-key[ =]+|\bAPI_KEY=)([^\s'"\\`,;)\]]+)"#)
            .unwrap();
    let mut found = Vec::new();
    for caps in lists.captures_iter(text) {
        let inner = caps[1].trim_start_matches('[').trim_end_matches(']');
        found.extend(
            inner
                .split(',')
                .map(|item| item.trim().trim_matches(|c| c == '"' || c == '\\'))
                .map(str::to_owned),
        );
    }
    found.extend(single.captures_iter(text).map(|c| c[1].to_owned()));
    found.retain(|v| !v.is_empty() && !v.contains(['$', '{', '<']));
    found
}

#[test]
fn every_published_credential_is_listed() {
    let root = workspace_root();
    let mut files = Vec::new();
    published_files(&root, &mut files);
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let in_src = file
            .strip_prefix(&root)
            .is_ok_and(|p| p.components().any(|c| c.as_os_str() == "src"));
        let text: String = if in_src && file.extension().is_some_and(|e| e == "rs") {
            text.lines()
                .filter(|l| matches!(l.trim_start().get(..3), Some("///" | "//!")))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        for value in credentials_in(&text) {
            if !PUBLISHED_CREDENTIALS.contains(&value.as_str()) {
                missing.push(format!("{}: {value}", file.display()));
            }
            seen.insert(value);
        }
    }
    assert!(
        missing.is_empty(),
        "published credentials missing from PUBLISHED_CREDENTIALS (config/src/published.rs):\n{}",
        missing.join("\n")
    );
    // The scan itself works: it finds the reference file's, the README's and the bench's.
    for known in [
        "dev-api-key-change-me",
        "demo-stream-token-secret-change-me-in-production",
        "bench-secret-bench-secret-bench-secret",
        "bench-api-key-0123456789",
        "0123456789abcdef0123456789abcdef",
    ] {
        assert!(seen.contains(known), "scan missed {known}: {seen:?}");
    }
}

#[test]
fn the_scan_recognises_every_form() {
    let text = r#"
api_keys = ["a-key-0123456789", "$API_KEY"]
stream_token_secret = "a-secret"
stream_token_secrets = ["s1", "s2"]
let base = "[auth]\napi_keys = [\"escaped-key\"]\n";
curl -H 'Authorization: Bearer curl-key' ; curl -H "Authorization: Bearer $KEY"
agentgate loadtest --api-key cli-key --target x
API_KEY=shell-key
`Authorization: Bearer <key>`
"#;
    let mut found = credentials_in(text);
    found.sort();
    assert_eq!(
        found,
        [
            "a-key-0123456789",
            "a-secret",
            "cli-key",
            "curl-key",
            "escaped-key",
            "s1",
            "s2",
            "shell-key"
        ]
    );
}

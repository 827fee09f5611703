//! `[tools]` and `[tools.NAME]`: defaults, the reference file's tools, and errors that name
//! the key and its line.

use std::time::Duration;

use agentgate_config::{Config, ConfigError, REFERENCE_TOML, ToolConfig, ToolKind, ToolsConfig};

/// Credentials that pass validation.
const AUTH: &str = r#"
[auth]
api_keys = ["0123456789abcdef"]
stream_token_secret = "0123456789abcdef0123456789abcdef"
"#;

fn errors(src: &str) -> Vec<ConfigError> {
    Config::from_toml_str(&format!("{AUTH}{src}")).expect_err("source should be rejected")
}

/// `(key, line, message)` of every error; lines count from the start of `src`.
fn located(src: &str) -> Vec<(String, Option<usize>, String)> {
    let offset = AUTH.lines().count();
    errors(src)
        .into_iter()
        .map(|e| {
            (
                e.key.unwrap_or_default(),
                e.line.map(|l| l - offset),
                e.message,
            )
        })
        .collect()
}

#[test]
fn defaults_are_as_documented() {
    let t = ToolsConfig::default();
    assert_eq!(t.max_parallel, 8);
    assert_eq!(t.timeout(), Duration::from_secs(10));
    assert_eq!(t.workers, 0);
    assert!(t.worker_threads() >= 1);
    assert_eq!(t.queue_capacity, 1024);
    assert_eq!(t.max_calls, 64);
    assert_eq!(t.max_input_bytes, 65_536);
    assert_eq!(t.max_batch_bytes, 16_777_216);
    assert_eq!(t.max_output_bytes, 1_048_576);
    assert!(t.tools.is_empty());
    assert!(Config::default().features.parallel_tools);
}

#[test]
fn reference_file_declares_the_builtins() {
    let config = Config::from_toml_str(REFERENCE_TOML).expect("valid");
    let kinds: Vec<(&str, ToolKind)> = config
        .tools
        .tools
        .iter()
        .map(|(name, tool)| (name.as_str(), tool.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("json_query", ToolKind::JsonQuery),
            ("regex_extract", ToolKind::RegexExtract),
            ("sha256", ToolKind::Sha256),
        ]
    );
    assert_eq!(
        config.tools.tools["regex_extract"].timeout(),
        Some(Duration::from_secs(2))
    );
    assert!(config.features.parallel_tools);
}

#[test]
fn reference_file_http_example_is_valid() {
    let mut example = String::new();
    let mut lines = REFERENCE_TOML.lines();
    for line in lines.by_ref() {
        if line == "# [tools.web_search]" {
            example.push_str("[tools.web_search]\n");
            break;
        }
    }
    for line in lines {
        let Some(toml) = line.strip_prefix("# ") else {
            break;
        };
        example.push_str(toml);
        example.push('\n');
    }
    assert!(example.contains("kind = \"http\""), "found: {example}");
    let src = format!("{REFERENCE_TOML}\n[upstreams.search]\npeers = [\"10.0.0.21:8080\"]\n");
    let src = src.replace("# [tools.web_search]", &example);
    let config = Config::from_toml_str(&src).unwrap_or_else(|e| panic!("{e:#?}"));
    let tool = &config.tools.tools["web_search"];
    assert_eq!(
        tool,
        &ToolConfig {
            kind: ToolKind::Http,
            upstream: Some("search".into()),
            path: Some("/v1/search".into()),
            timeout_ms: Some(5_000),
        }
    );
    assert_eq!(tool.http_path(), "/v1/search");
}

#[test]
fn settings_and_tools_load() {
    let config = Config::from_toml_str(&format!(
        "{AUTH}
[features]
parallel_tools = false
[upstreams.api]
peers = [\"127.0.0.1:9000\"]
[tools]
max_parallel = 2
timeout_ms = 500
workers = 3
queue_capacity = 7
max_calls = 10
max_input_bytes = 2048
max_batch_bytes = 8192
max_output_bytes = 4096
[tools.hash]
kind = \"sha256\"
[tools.lookup]
kind = \"http\"
upstream = \"api\"
"
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let t = &config.tools;
    assert!(!config.features.parallel_tools);
    assert_eq!(
        (
            t.max_parallel,
            t.timeout_ms,
            t.worker_threads(),
            t.queue_capacity,
            t.max_calls,
            t.max_input_bytes,
            t.max_batch_bytes,
            t.max_output_bytes
        ),
        (2, 500, 3, 7, 10, 2048, 8192, 4096)
    );
    assert_eq!(t.tools["hash"].kind, ToolKind::Sha256);
    assert_eq!(t.tools["lookup"].http_path(), "/");
}

#[test]
fn a_misspelt_setting_is_an_unknown_key_with_its_line() {
    let errors = located("[tools]\nmax_parallel = 2\nmax_paralel = 4\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (key, line, message) = &errors[0];
    assert_eq!(key, "tools.max_paralel");
    assert_eq!(*line, Some(3));
    assert!(message.contains("unknown field `max_paralel`"), "{message}");
    assert!(
        message.contains("max_parallel, timeout_ms"),
        "lists the settings: {message}"
    );
}

#[test]
fn an_unknown_key_in_a_tool_is_named_with_its_line() {
    let errors = located("[tools.hash]\nkind = \"sha256\"\nupstrem = \"x\"\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (key, line, message) = &errors[0];
    assert_eq!(key, "tools.hash.upstrem");
    assert_eq!(*line, Some(3));
    assert!(message.contains("unknown field `upstrem`"), "{message}");
}

#[test]
fn an_unknown_kind_is_named() {
    let errors = located("[tools.x]\nkind = \"shell\"\n");
    let (key, line, message) = &errors[0];
    assert_eq!(key, "tools.x.kind");
    assert_eq!(*line, Some(2));
    assert!(message.contains("unknown variant `shell`"), "{message}");
}

#[test]
fn broken_rules_name_each_key() {
    let src = "[upstreams.api]
peers = [\"127.0.0.1:9000\"]
[tools]
max_parallel = 0
timeout_ms = 0
workers = 2000
queue_capacity = 0
max_calls = 1001
max_input_bytes = 0
max_output_bytes = 0
[tools.a]
kind = \"http\"
[tools.b]
kind = \"http\"
upstream = \"nowhere\"
path = \"no-slash\"
[tools.c]
kind = \"sha256\"
upstream = \"api\"
path = \"/x\"
timeout_ms = 0
[tools.\"bad name\"]
kind = \"json_query\"
";
    let errors = located(src);
    let keys: Vec<(&str, Option<usize>)> =
        errors.iter().map(|(k, l, _)| (k.as_str(), *l)).collect();
    assert_eq!(
        keys,
        [
            ("tools.max_parallel", Some(4)),
            ("tools.timeout_ms", Some(5)),
            ("tools.workers", Some(6)),
            ("tools.queue_capacity", Some(7)),
            ("tools.max_calls", Some(8)),
            ("tools.max_input_bytes", Some(9)),
            ("tools.max_output_bytes", Some(10)),
            ("tools.a.upstream", None),
            ("tools.b.upstream", Some(15)),
            ("tools.b.path", Some(16)),
            ("tools.\"bad name\"", Some(22)),
            ("tools.c.timeout_ms", Some(21)),
            ("tools.c.upstream", Some(19)),
            ("tools.c.path", Some(20)),
        ],
        "{errors:#?}"
    );
    let message = |key: &str| &errors.iter().find(|(k, _, _)| k == key).unwrap().2;
    assert_eq!(
        message("tools.b.upstream"),
        "no [upstreams.nowhere] table is defined"
    );
    assert!(message("tools.c.upstream").contains("only applies to kind = \"http\""));
}

#[test]
fn the_batch_budget_must_hold_one_whole_input() {
    let errors = located(
        "[tools]
max_input_bytes = 2048
max_batch_bytes = 2047
",
    );
    assert_eq!(
        errors,
        [(
            "tools.max_batch_bytes".to_owned(),
            Some(3),
            "must be at least tools.max_input_bytes (2048), or a single call's input could not fit"
                .to_owned()
        )],
    );
    assert!(
        Config::from_toml_str(&format!(
            "{AUTH}[tools]\nmax_input_bytes = 2048\nmax_batch_bytes = 2048\n"
        ))
        .is_ok()
    );
}

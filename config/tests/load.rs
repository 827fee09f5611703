//! Loading, defaults and located errors, through the public API only.

use std::net::SocketAddr;
use std::time::Duration;

use agentgate_config::{
    Config, ConfigError, Dispatch, REFERENCE_TOML, RedisConfig, StoreKind, ValidationError,
};

/// Credentials that pass validation, for sources that test something else.
const AUTH: &str = r#"
[auth]
api_keys = ["0123456789abcdef"]
stream_token_secret = "0123456789abcdef0123456789abcdef"
"#;

fn errors(src: &str) -> Vec<ConfigError> {
    Config::from_toml_str(src).expect_err("source should be rejected")
}

fn error_for<'a>(errors: &'a [ConfigError], key: &str) -> &'a ConfigError {
    errors
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no error for {key} in {errors:#?}"))
}

#[test]
fn reference_file_loads_with_the_values_it_sets() {
    let config = Config::from_toml_str(REFERENCE_TOML).expect("reference config is valid");
    assert_eq!(
        config.server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(config.auth.api_keys, ["dev-api-key-change-me"]);
    assert!(config.auth.stream_token_secret.len() >= 32);
    assert_eq!(config.store.kind, StoreKind::Memory);
    assert_eq!(config.agent.dispatch, Dispatch::Demo);
    // Every other value it sets is the default.
    let expected = Config {
        auth: config.auth.clone(),
        store: config.store.clone(),
        agent: config.agent.clone(),
        ..Config::default()
    };
    assert_eq!(config, expected);
    assert_eq!(config.store, Default::default());
    assert_eq!(config.agent.demo, Default::default());
}

#[test]
fn reference_file_loads_from_disk() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("agentgate.toml");
    let config = Config::load(&path).expect("reference config loads");
    assert_eq!(config.agent.dispatch, Dispatch::Demo);
}

/// The commented-out `[store.redis]` examples of the reference file, uncommented.
fn reference_redis_examples() -> Vec<String> {
    let mut examples = Vec::new();
    let mut lines = REFERENCE_TOML.lines();
    while let Some(line) = lines.next() {
        if line != "# [store.redis]" {
            continue;
        }
        let mut example = String::from("[store.redis]\n");
        for line in lines.by_ref() {
            // An example ends at the first line that is not a commented-out TOML line.
            let Some(toml) = line.strip_prefix("# ") else {
                break;
            };
            if !toml.starts_with('#') {
                example.push_str(toml);
                example.push('\n');
            }
        }
        examples.push(example);
    }
    examples
}

#[test]
fn reference_file_redis_examples_are_valid() {
    let examples = reference_redis_examples();
    assert_eq!(examples.len(), 2, "standalone and cluster: {examples:#?}");
    for (example, cluster, urls) in [(&examples[0], false, 1), (&examples[1], true, 3)] {
        let src = REFERENCE_TOML.replace("\nkind = \"memory\"\n", "\nkind = \"redis\"\n") + example;
        let config = Config::from_toml_str(&src).unwrap_or_else(|e| panic!("{e:#?}\n{example}"));
        assert_eq!(config.store.kind, StoreKind::Redis);
        assert_eq!(config.store.redis.cluster, cluster);
        assert_eq!(config.store.redis.urls.len(), urls);
    }
}

#[test]
fn defaults_are_as_documented() {
    let c = Config::default();
    assert_eq!(
        c.server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.server.max_body_bytes, 1_048_576);
    assert_eq!(c.server.shutdown_grace(), Duration::from_secs(10));
    assert!(c.auth.api_keys.is_empty());
    assert_eq!(c.auth.stream_token_secret, "");
    assert_eq!(c.auth.stream_token_ttl(), Duration::from_secs(86_400));
    assert_eq!(c.store.kind, StoreKind::Memory);
    assert_eq!(c.store.events_maxlen, 10_000);
    assert_eq!(c.store.retention(), Duration::from_secs(3_600));
    assert_eq!(c.store.session_ttl(), Duration::from_secs(86_400));
    assert_eq!(c.store.redis.urls, ["redis://127.0.0.1:6379"]);
    assert!(!c.store.redis.cluster);
    assert_eq!(c.store.redis.timeout(), Duration::from_millis(2_000));
    assert_eq!(
        c.store.redis.connect_timeout(),
        Duration::from_millis(1_000)
    );
    assert_eq!(c.sse.heartbeat(), Duration::from_secs(15));
    assert_eq!(c.sse.retry(), Duration::from_millis(2_000));
    assert_eq!(c.sse.replay_batch, 256);
    assert_eq!(c.agent.dispatch, Dispatch::None);
    assert_eq!(c.agent.demo.pace(), Duration::from_millis(150));
    assert_eq!(c.agent.demo.deltas, 12);
}

#[test]
fn omitted_keys_take_defaults() {
    let config = Config::from_toml_str(AUTH).expect("valid");
    assert_eq!(
        config,
        Config {
            auth: config.auth.clone(),
            ..Config::default()
        }
    );
    // An empty file parses to the defaults (which then fail validation on auth only).
    let parsed: Config = toml::from_str("").expect("parses");
    assert_eq!(parsed, Config::default());
    let keys: Vec<_> = errors("")
        .into_iter()
        .map(|e| e.key.expect("keyed"))
        .collect();
    assert_eq!(keys, ["auth.api_keys", "auth.stream_token_secret"]);
}

#[test]
fn serialized_config_parses_back() {
    let config = Config::from_toml_str(REFERENCE_TOML).expect("valid");
    let text = toml::to_string(&config).expect("serializes");
    assert_eq!(Config::from_toml_str(&text), Ok(config));
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let src = format!("[server]\nlisen = \"0.0.0.0:80\"\n{AUTH}");
    let errors = errors(&src);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert!(e.message.contains("unknown field `lisen`"), "{e}");
    assert!(
        e.message.contains("`listen`"),
        "suggests the known keys: {e}"
    );
    assert_eq!(e.key.as_deref(), Some("server.lisen"));
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
}

#[test]
fn unknown_table_is_named() {
    let e = &errors("[servr]\n")[0];
    assert!(e.message.contains("unknown field `servr`"), "{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(2)));
}

#[test]
fn type_error_names_key_line_and_column() {
    let e = &errors("[server]\nmax_body_bytes = \"big\"\n")[0];
    assert_eq!(e.key.as_deref(), Some("server.max_body_bytes"));
    assert_eq!((e.line, e.column), (Some(2), Some(18)));
    assert!(e.message.contains("invalid type"), "{e}");
    assert_eq!(
        e.to_string(),
        "line 2, column 18: server.max_body_bytes: invalid type: string \"big\", expected u64"
    );

    let e = &errors("[store]\nkind = \"disk\"\n")[0];
    assert_eq!(e.key.as_deref(), Some("store.kind"));
    assert_eq!((e.line, e.column), (Some(2), Some(8)));

    let e = &errors("[server]\nlisten = \"localhost\"\n")[0];
    assert_eq!(e.key.as_deref(), Some("server.listen"));
    assert_eq!((e.line, e.column), (Some(2), Some(10)));
}

#[test]
fn syntax_error_has_a_position() {
    let e = &errors("[server]\nlisten = \n")[0];
    assert_eq!(e.line, Some(2));
    assert!(e.column.is_some());
}

#[test]
fn validation_error_on_a_present_key_is_located() {
    let src = format!("[sse]\nheartbeat_secs = 0\n{AUTH}");
    let errors = errors(&src);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.key.as_deref(), Some("sse.heartbeat_secs"));
    assert_eq!((e.line, e.column), (Some(2), Some(18)));
    assert_eq!(
        e.to_string(),
        "line 2, column 18: sse.heartbeat_secs: must be at least 1"
    );
}

#[test]
fn dotted_keys_and_inline_tables_are_located() {
    let src = format!(
        "sse.heartbeat_secs = 0\nstore = {{ redis = {{ timeout_ms = 0 }}, kind = \"redis\" }}\n{AUTH}"
    );
    let errors = errors(&src);
    let e = error_for(&errors, "sse.heartbeat_secs");
    assert_eq!((e.line, e.column), (Some(1), Some(22)));
    let e = error_for(&errors, "store.redis.timeout_ms");
    assert_eq!((e.line, e.column), (Some(2), Some(34)));
}

#[test]
fn absent_required_value_has_key_but_no_line() {
    let src = "[auth]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let errors = errors(src);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.key.as_deref(), Some("auth.api_keys"));
    assert_eq!((e.line, e.column), (None, None));
    assert_eq!(
        e.to_string(),
        "auth.api_keys: at least one API key is required"
    );
}

#[test]
fn all_problems_are_reported() {
    let src = r#"
[server]
max_body_bytes = 10
shutdown_grace_secs = 7200

[auth]
api_keys = ["short", "has whitespace inside", "0123456789abcdef", "0123456789abcdef"]
stream_token_secret = "tiny"
stream_token_ttl_secs = 0

[store]
events_maxlen = 0
retention_secs = 0
session_ttl_secs = 0

[sse]
heartbeat_secs = 0
retry_ms = 0
replay_batch = 10001

[agent]
dispatch = "demo"
demo = { deltas = 0, pace_ms = 60001 }
"#;
    let errors = errors(src);
    let located: Vec<_> = errors
        .iter()
        .map(|e| (e.key.as_deref().expect("keyed"), e.line))
        .collect();
    assert_eq!(
        located,
        [
            ("server.max_body_bytes", Some(3)),
            ("server.shutdown_grace_secs", Some(4)),
            ("auth.api_keys[0]", Some(7)),
            ("auth.api_keys[1]", Some(7)),
            ("auth.api_keys[3]", Some(7)),
            ("auth.stream_token_secret", Some(8)),
            ("auth.stream_token_ttl_secs", Some(9)),
            ("store.events_maxlen", Some(12)),
            ("store.retention_secs", Some(13)),
            ("store.session_ttl_secs", Some(14)),
            ("sse.heartbeat_secs", Some(17)),
            ("sse.retry_ms", Some(18)),
            ("sse.replay_batch", Some(19)),
            ("agent.demo.deltas", Some(23)),
            ("agent.demo.pace_ms", Some(23)),
        ]
    );
    assert_eq!(error_for(&errors, "auth.api_keys[1]").column, Some(22));
    assert_eq!(
        error_for(&errors, "auth.api_keys[3]").message,
        "duplicates auth.api_keys[2]"
    );
    // Secrets are never echoed.
    assert!(errors.iter().all(|e| !e.to_string().contains("tiny")));
}

#[test]
fn api_key_rules() {
    let config = |keys: &[&str]| {
        let mut c = Config::from_toml_str(AUTH).expect("valid");
        c.auth.api_keys = keys.iter().map(|k| k.to_string()).collect();
        c.validate()
    };
    assert_eq!(config(&["0123456789abcdef", "fedcba9876543210"]), Ok(()));
    assert_eq!(
        config(&["0123456789abcde"]),
        Err(vec![ValidationError::new(
            "auth.api_keys[0]",
            "must be at least 16 characters long"
        )])
    );
    assert_eq!(
        config(&["0123456789abcdef\t"]),
        Err(vec![ValidationError::new(
            "auth.api_keys[0]",
            "must not contain whitespace"
        )])
    );
}

fn redis(body: &str) -> Vec<ConfigError> {
    errors(&format!(
        "[store]\nkind = \"redis\"\n\n[store.redis]\n{body}{AUTH}"
    ))
}

#[test]
fn redis_without_urls_fails() {
    let errors = redis("urls = []\n");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.key.as_deref(), Some("store.redis.urls"));
    assert_eq!((e.line, e.column), (Some(5), Some(8)));
}

#[test]
fn redis_bad_scheme_fails_at_the_element() {
    let errors =
        redis("cluster = true\nurls = [\"redis://a:6379\", \"http://b:6379\", \"rediss://\"]\n");
    assert_eq!(errors.len(), 2);
    let e = error_for(&errors, "store.redis.urls[1]");
    assert_eq!((e.line, e.column), (Some(6), Some(27)));
    assert_eq!(
        e.to_string(),
        "line 6, column 27: store.redis.urls[1]: must start with redis:// or rediss://"
    );
    error_for(&errors, "store.redis.urls[2]");
}

#[test]
fn redis_standalone_with_two_urls_fails() {
    let errors = redis("urls = [\"redis://a:6379\", \"redis://b:6379\"]\n");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.key.as_deref(), Some("store.redis.urls"));
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("cluster"), "{e}");
    // The same list is fine in cluster mode.
    let src = format!(
        "{AUTH}\n[store]\nkind = \"redis\"\nredis.cluster = true\nredis.urls = [\"redis://a:6379\", \"redis://b:6379\"]\n"
    );
    let config = Config::from_toml_str(&src).expect("valid cluster config");
    assert!(config.store.redis.cluster);
}

#[test]
fn redis_section_is_ignored_for_memory_store() {
    let src = format!("{AUTH}\n[store.redis]\nurls = []\ntimeout_ms = 0\n");
    let config = Config::from_toml_str(&src).expect("redis settings unused");
    assert_eq!(
        config.store.redis,
        RedisConfig {
            urls: vec![],
            timeout_ms: 0,
            ..Default::default()
        }
    );
}

#[test]
fn unreadable_file_is_one_unlocated_error() {
    let errors = Config::load(std::path::Path::new("/nonexistent/agentgate.toml"))
        .expect_err("missing file");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!((&e.key, e.line, e.column), (&None, None, None));
    assert!(e.message.contains("/nonexistent/agentgate.toml"), "{e}");
}

//! Loading, defaults and located errors, through the public API only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentgate_config::{
    Balance, Config, ConfigError, Dispatch, HashOn, HealthCheckConfig, REFERENCE_TOML, RedisConfig,
    RouteConfig, RouteKind, SseShare, StoreKind, UpstreamConfig, UpstreamTlsConfig,
    ValidationError,
};

/// Credentials that pass validation on any listener (not published examples), for sources
/// that test something else.
const AUTH: &str = r#"
[auth]
api_keys = ["load-test-key-0123456789"]
stream_token_secret = "load-test-secret-load-test-secret-xx"
"#;

fn errors(src: &str) -> Vec<ConfigError> {
    Config::from_toml_str(src).expect_err("source should be rejected")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// `(key, line)` of every error, in order.
fn located(errors: &[ConfigError]) -> Vec<(&str, Option<usize>)> {
    errors
        .iter()
        .map(|e| (e.key.as_deref().expect("keyed"), e.line))
        .collect()
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
    assert_eq!(config.server.listen, [addr("127.0.0.1:8080")]);
    assert!(config.routes.is_empty(), "implicit agent route");
    assert!(config.upstreams.is_empty());
    assert_eq!(config.auth.api_keys, ["dev-api-key-change-me"]);
    assert!(config.auth.stream_token_secret.len() >= 32);
    assert_eq!(config.store.kind, StoreKind::Memory);
    assert_eq!(config.agent.dispatch, Dispatch::Demo);
    assert_eq!(config.server.admin_listen, Some(addr("127.0.0.1:9901")));
    // Every other value it sets is the default.
    let expected = Config {
        server: agentgate_config::ServerConfig {
            admin_listen: config.server.admin_listen,
            ..Default::default()
        },
        auth: config.auth.clone(),
        store: config.store.clone(),
        agent: config.agent.clone(),
        tools: agentgate_config::ToolsConfig {
            tools: config.tools.tools.clone(),
            ..Default::default()
        },
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
    assert_eq!(
        examples.len(),
        3,
        "standalone, sentinel, cluster: {examples:#?}"
    );
    for (example, cluster, sentinel, urls) in [
        (&examples[0], false, false, 1),
        (&examples[1], false, true, 3),
        (&examples[2], true, false, 3),
    ] {
        let src = REFERENCE_TOML.replace("\nkind = \"memory\"\n", "\nkind = \"redis\"\n") + example;
        let config = Config::from_toml_str(&src).unwrap_or_else(|e| panic!("{e:#?}\n{example}"));
        assert_eq!(config.store.kind, StoreKind::Redis);
        assert_eq!(config.store.redis.cluster, cluster);
        assert_eq!(config.store.redis.sentinel_master.is_some(), sentinel);
        assert_eq!(config.store.redis.urls.len(), urls);
    }
}

#[test]
fn defaults_are_as_documented() {
    let c = Config::default();
    assert_eq!(c.server.listen, [addr("127.0.0.1:8080")]);
    assert_eq!(c.server.threads, 0);
    assert!(c.server.worker_threads() >= 1);
    assert_eq!(c.server.runtime_dir, None);
    let runtime_dir = c.server.runtime_dir_path(1000);
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(xdg) if xdg.is_absolute() => assert_eq!(runtime_dir, xdg.join("agentgate")),
        _ => assert_eq!(runtime_dir, std::env::temp_dir().join("agentgate-1000")),
    }
    assert_eq!(c.server.pid_file, None);
    let run = Path::new("/run/user/1000/agentgate");
    assert_eq!(
        c.server.pid_file_path(run, 8080),
        run.join("agentgate-8080.pid")
    );
    assert_eq!(c.server.upgrade_sock, None);
    assert_eq!(
        c.server.upgrade_sock_path(run, 41234),
        run.join("agentgate-41234.upgrade.sock")
    );
    assert!(c.server.uses_runtime_dir());
    assert!(c.server.admin_hosts.is_empty());
    assert!(c.server.admin_tokens.is_empty());
    assert_eq!(c.server.max_body_bytes, 1_048_576);
    assert_eq!(c.server.shutdown_grace(), Duration::from_secs(10));
    assert!(c.auth.api_keys.is_empty());
    assert_eq!(c.auth.stream_token_secret, "");
    assert_eq!(c.auth.stream_token_ttl(), Duration::from_secs(86_400));
    assert_eq!(c.store.kind, StoreKind::Memory);
    assert_eq!(c.store.events_maxlen, 10_000);
    assert_eq!(c.store.retention(), Duration::from_secs(3_600));
    assert_eq!(c.store.session_ttl(), Duration::from_secs(86_400));
    assert_eq!(c.store.quotas.max_active_sessions_per_key, 1_000);
    assert_eq!(c.store.quotas.max_session_bytes, 16 * 1024 * 1024);
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
    assert!(c.routes.is_empty());
    assert!(c.upstreams.is_empty());

    let r = RouteConfig::default();
    assert_eq!(r.name, "");
    assert_eq!(r.kind, RouteKind::Agent);
    assert_eq!(r.host, None);
    assert_eq!(r.path_prefix, "/");
    assert!(r.methods.is_empty());
    assert_eq!(r.upstream, None);

    let u = UpstreamConfig::default();
    assert!(u.peers.is_empty());
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.hash_on, HashOn::SessionId);
    assert_eq!(u.connect_timeout(), Duration::from_millis(1_000));
    assert_eq!(u.read_timeout(), Some(Duration::from_millis(30_000)));
    assert_eq!(u.idle_timeout(), Duration::from_millis(60_000));
    assert!(u.retry_connect);
    assert_eq!(u.health_check, None);

    let h = HealthCheckConfig::default();
    assert_eq!(h.path, "/healthz");
    assert_eq!(h.interval(), Duration::from_millis(1_000));
    assert_eq!(h.timeout(), Duration::from_millis(1_000));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 1));
    assert_eq!(h.expect_status, 200);
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
fn bad_sentinel_and_ack_settings_are_named() {
    let keys = |body: &str| -> Vec<String> {
        let mut keys: Vec<String> = redis(body).iter().filter_map(|e| e.key.clone()).collect();
        keys.sort();
        keys
    };
    let sentinels = "urls = [\"redis://a:26379\", \"redis://b:26379\"]\n";
    let valid = format!(
        "{AUTH}\n[store]\nkind = \"redis\"\n[store.redis]\n{sentinels}sentinel_master = \"m\"\n"
    );
    let config = Config::from_toml_str(&valid).expect("several Sentinel URLs");
    assert_eq!(config.store.redis.sentinel_master.as_deref(), Some("m"));
    assert_eq!(
        keys(&format!("{sentinels}sentinel_master = \" \"\n")),
        ["store.redis.sentinel_master"]
    );
    assert_eq!(
        keys(&format!(
            "{sentinels}sentinel_master = \"m\"\ncluster = true\n"
        )),
        ["store.redis.sentinel_master"]
    );
    assert_eq!(
        keys("urls = [\"redis://a:6379\"]\nsentinel_master_password = \"p\"\n"),
        ["store.redis.sentinel_master_password"]
    );
    assert_eq!(
        keys("urls = [\"redis://a:6379\"]\nack_replicas = 1\nack_timeout_ms = 2000\n"),
        ["store.redis.ack_timeout_ms"]
    );
    assert_eq!(
        keys(&format!("{sentinels}cluster = true\nack_replicas = 1\n")),
        ["store.redis.ack_replicas"]
    );
    let naive = format!(
        "{AUTH}\n[features]\npipelining = false\n[store]\nkind = \"redis\"\nredis.ack_replicas = 1\n"
    );
    let errors = Config::from_toml_str(&naive).expect_err("ack needs pipelining");
    assert!(
        format!("{errors:?}").contains("store.redis.ack_replicas"),
        "{errors:?}"
    );
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

/// The commented-out routing example at the end of the reference file, uncommented: from the
/// first `# [[routes]]` line to the first line that is not a comment.
fn reference_routes_example() -> String {
    let mut lines = REFERENCE_TOML
        .lines()
        .skip_while(|line| *line != "# [[routes]]");
    let mut example = String::new();
    for line in lines.by_ref() {
        let Some(toml) = line
            .strip_prefix("# ")
            .or_else(|| (line == "#").then_some(""))
        else {
            break;
        };
        example.push_str(toml);
        example.push('\n');
    }
    example
}

#[test]
fn reference_file_routes_example_is_valid() {
    let example = reference_routes_example();
    assert!(example.starts_with("[[routes]]\n"), "{example}");
    let src = format!("{REFERENCE_TOML}\n{example}");
    let config = Config::from_toml_str(&src).unwrap_or_else(|e| panic!("{e:#?}\n{example}"));
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.kind,
                r.path_prefix.as_str(),
                r.upstream.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("agent-api", RouteKind::Agent, "/v2/", None),
            ("metrics", RouteKind::Agent, "/metrics", None),
            ("backend", RouteKind::Upstream, "/", Some("backend")),
        ]
    );
    let canary = config.routes[2]
        .canary
        .as_ref()
        .expect("the example's canary");
    assert_eq!(
        (canary.upstream.as_str(), canary.weight),
        ("backend-next", 5.0)
    );
    let backend = &config.upstreams["backend"];
    assert_eq!(
        backend.peer_addrs(),
        Ok(vec![addr("10.0.0.11:8080"), addr("10.0.0.12:8080")])
    );
    assert_eq!(backend.balance, Balance::RoundRobin);
    let health = backend.health_check.as_ref().expect("health check");
    assert_eq!(health.path, "/healthz");
    assert_eq!(health.unhealthy_threshold, 2);
    let tls = backend.tls.as_ref().expect("the example's tls");
    assert_eq!(
        (tls.server_name.as_str(), &tls.ca_file),
        ("backend.internal", &None)
    );
}

#[test]
fn listen_takes_a_string_or_a_list() {
    let config = Config::from_toml_str(&format!("{AUTH}\n[server]\nlisten = \"0.0.0.0:0\"\n"))
        .expect("one string");
    assert_eq!(config.server.listen, [addr("0.0.0.0:0")]);

    let config = Config::from_toml_str(&format!(
        "{AUTH}\n[server]\nlisten = [\"0.0.0.0:8080\", \"[::]:8443\"]\n"
    ))
    .expect("a list");
    assert_eq!(
        config.server.listen,
        [addr("0.0.0.0:8080"), addr("[::]:8443")]
    );
}

#[test]
fn bad_listen_address_in_a_list_is_located_at_the_element() {
    let e = &errors("[server]\nlisten = [\"0.0.0.0:80\", \"localhost:80\"]\n")[0];
    assert_eq!(e.key.as_deref(), Some("server.listen[1]"));
    assert_eq!((e.line, e.column), (Some(2), Some(25)));
    assert!(e.message.contains("\"localhost:80\""), "{e}");
    assert!(e.message.contains("IP:port"), "{e}");

    let e = &errors("[server]\nlisten = 8080\n")[0];
    assert_eq!(e.key.as_deref(), Some("server.listen"));
    assert_eq!((e.line, e.column), (Some(2), Some(10)));
}

#[test]
fn server_rules() {
    let src = format!(
        "{AUTH}\n[server]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:1\"]\nthreads = 1025\npid_file = \"\"\n"
    );
    let errors = errors(&src);
    assert_eq!(
        located(&errors),
        [
            ("server.listen[2]", Some(7)),
            ("server.threads", Some(8)),
            ("server.pid_file", Some(9)),
        ]
    );
    assert_eq!(
        error_for(&errors, "server.listen[2]").message,
        "duplicates server.listen[0]"
    );

    let errors = self::errors(&format!("{AUTH}\n[server]\nlisten = []\n"));
    assert_eq!(located(&errors), [("server.listen", Some(7))]);

    let config = Config::from_toml_str(&format!(
        "{AUTH}\n[server]\nthreads = 1024\npid_file = \"/run/ag.pid\"\nupgrade_sock = \"/run/ag.sock\"\n"
    ))
    .expect("valid");
    assert_eq!(config.server.worker_threads(), 1024);
    let run = Path::new("/unused");
    assert_eq!(
        config.server.pid_file_path(run, 0),
        PathBuf::from("/run/ag.pid")
    );
    assert_eq!(
        config.server.upgrade_sock_path(run, 0),
        PathBuf::from("/run/ag.sock")
    );
    assert!(!config.server.uses_runtime_dir());
}

const ROUTING: &str = r#"
[[routes]]
name = "sessions"
host = "API.example.com"
path_prefix = "/v2/"
methods = ["GET", "POST"]

[[routes]]
name = "users"
kind = "upstream"
path_prefix = "/users/"
upstream = "users"

[[routes]]
name = "rest"
kind = "upstream"
upstream = "backend"

[upstreams.users]
peers = ["10.0.0.21:9000", "[fd00::22]:9000"]
balance = "consistent_hash"
hash_on = "header:X-User"
connect_timeout_ms = 250
read_timeout_ms = 0
idle_timeout_ms = 5_000
retry_connect = false

[upstreams.backend]
peers = ["10.0.0.11:8080"]

[upstreams.backend.health_check]
path = "/ready"
interval_ms = 500
timeout_ms = 200
healthy_threshold = 2
unhealthy_threshold = 3
expect_status = 204
"#;

#[test]
fn routes_and_upstreams_load_with_their_values() {
    let config = Config::from_toml_str(&format!("{AUTH}{ROUTING}")).expect("valid");
    assert_eq!(
        config.routes,
        [
            RouteConfig {
                name: "sessions".into(),
                kind: RouteKind::Agent,
                host: Some("API.example.com".into()),
                path_prefix: "/v2/".into(),
                methods: vec!["GET".into(), "POST".into()],
                upstream: None,
                rate_limit: None,
                priority_queue: None,
                canary: None,
                share: SseShare::Credentials,
                credential_headers: Vec::new(),
                durable: None,
            },
            RouteConfig {
                name: "users".into(),
                kind: RouteKind::Upstream,
                path_prefix: "/users/".into(),
                upstream: Some("users".into()),
                ..Default::default()
            },
            RouteConfig {
                name: "rest".into(),
                kind: RouteKind::Upstream,
                upstream: Some("backend".into()),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        config.upstreams.keys().collect::<Vec<_>>(),
        ["backend", "users"]
    );

    let users = &config.upstreams["users"];
    assert_eq!(users.balance, Balance::ConsistentHash);
    assert_eq!(users.hash_on, HashOn::Header("x-user".into()));
    assert_eq!(users.hash_on.to_string(), "header:x-user");
    assert_eq!(
        users.peer_addrs(),
        Ok(vec![addr("10.0.0.21:9000"), addr("[fd00::22]:9000")])
    );
    assert_eq!(users.connect_timeout(), Duration::from_millis(250));
    assert_eq!(users.read_timeout(), None);
    assert_eq!(users.idle_timeout(), Duration::from_secs(5));
    assert!(!users.retry_connect);
    assert_eq!(users.health_check, None);

    let backend = &config.upstreams["backend"];
    assert_eq!(
        backend,
        &UpstreamConfig {
            peers: vec!["10.0.0.11:8080".into()],
            health_check: Some(HealthCheckConfig {
                path: "/ready".into(),
                interval_ms: 500,
                timeout_ms: 200,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                expect_status: 204,
            }),
            ..Default::default()
        }
    );
    let health = backend.health_check.as_ref().expect("set");
    assert_eq!(health.interval(), Duration::from_millis(500));
    assert_eq!(health.timeout(), Duration::from_millis(200));

    // It also survives a round trip through serialization.
    let text = toml::to_string(&config).expect("serializes");
    assert_eq!(Config::from_toml_str(&text), Ok(config));
}

#[test]
fn hash_on_forms() {
    let hash_on = |value: &str| {
        let src =
            format!("{AUTH}\n[upstreams.u]\npeers = [\"10.0.0.1:80\"]\nhash_on = {value:?}\n");
        Config::from_toml_str(&src).map(|c| c.upstreams["u"].hash_on.clone())
    };
    assert_eq!(hash_on("session_id"), Ok(HashOn::SessionId));
    assert_eq!(
        hash_on("header:x-user"),
        Ok(HashOn::Header("x-user".into()))
    );
    for bad in ["session", "header:", "header:x user", "header:x:y"] {
        let errors = hash_on(bad).expect_err(bad);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let e = &errors[0];
        assert_eq!(e.key.as_deref(), Some("upstreams.u.hash_on"), "{bad}: {e}");
        assert_eq!((e.line, e.column), (Some(8), Some(11)), "{bad}: {e}");
    }
}

#[test]
fn route_rules() {
    let src = format!(
        r#"{AUTH}
[upstreams.backend]
peers = ["10.0.0.1:80"]

[[routes]]
name = ""
path_prefix = "v2/"
methods = ["get", "POST", "FETCH", "POST"]

[[routes]]
name = "to-nowhere"
kind = "upstream"
upstream = "missing"
host = "example.com:443"

[[routes]]
name = "agent with upstream"
upstream = "backend"

[[routes]]
name = "to-nowhere"
kind = "upstream"
"#
    );
    let errors = errors(&src);
    assert_eq!(
        located(&errors),
        [
            ("routes[0].name", Some(10)),
            ("routes[0].path_prefix", Some(11)),
            ("routes[0].methods[0]", Some(12)),
            ("routes[0].methods[2]", Some(12)),
            ("routes[0].methods[3]", Some(12)),
            ("routes[1].host", Some(18)),
            ("routes[1].upstream", Some(17)),
            ("routes[2].name", Some(21)),
            ("routes[2].upstream", Some(22)),
            // Required but absent: named, with no line to point at.
            ("routes[3].upstream", None),
            ("routes[3].name", Some(25)),
        ]
    );
    let message = |key| error_for(&errors, key).message.as_str();
    assert_eq!(message("routes[0].name"), "is required");
    assert_eq!(message("routes[0].path_prefix"), "must start with '/'");
    assert_eq!(
        message("routes[0].methods[0]"),
        "must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS (upper-case)"
    );
    assert_eq!(
        message("routes[0].methods[3]"),
        "duplicates routes[0].methods[1]"
    );
    assert_eq!(
        message("routes[1].upstream"),
        "no [upstreams.missing] table is defined"
    );
    assert!(message("routes[2].upstream").contains("kind = \"agent\""));
    assert!(message("routes[3].upstream").contains("required"));
    assert_eq!(message("routes[3].name"), "duplicates routes[1].name");
    assert_eq!(
        error_for(&errors, "routes[1].upstream").to_string(),
        "line 17, column 12: routes[1].upstream: no [upstreams.missing] table is defined"
    );
}

#[test]
fn route_hosts() {
    let host = |host: &str| {
        let mut config = Config::from_toml_str(AUTH).expect("valid");
        config.routes.push(RouteConfig {
            name: "r".into(),
            host: Some(host.into()),
            ..Default::default()
        });
        config.validate().is_ok()
    };
    for good in [
        "example.com",
        "API.Example.com",
        "10.0.0.1",
        "[::1]",
        "localhost",
    ] {
        assert!(host(good), "{good}");
    }
    for bad in [
        "",
        "example.com:80",
        "http://example.com",
        "example.com/",
        "*.example.com",
        "[::1]:80",
        "::1",
    ] {
        assert!(!host(bad), "{bad}");
    }
}

#[test]
fn upstream_rules() {
    let src = format!(
        r#"{AUTH}
[upstreams.backend]
peers = ["10.0.0.1", "db.internal:5432", "10.0.0.2:0", "10.0.0.3:80", "10.0.0.3:80"]
connect_timeout_ms = 0
read_timeout_ms = 0
idle_timeout_ms = 0

[upstreams.backend.health_check]
path = "healthz"
interval_ms = 99
timeout_ms = 0
healthy_threshold = 0
unhealthy_threshold = 0
expect_status = 600

[upstreams.empty]
peers = []

[upstreams."my pool"]
peers = ["10.0.0.9:80"]
"#
    );
    let errors = errors(&src);
    assert_eq!(
        located(&errors),
        [
            ("upstreams.backend.peers[0]", Some(7)),
            ("upstreams.backend.peers[1]", Some(7)),
            ("upstreams.backend.peers[2]", Some(7)),
            ("upstreams.backend.peers[4]", Some(7)),
            ("upstreams.backend.connect_timeout_ms", Some(8)),
            ("upstreams.backend.idle_timeout_ms", Some(10)),
            ("upstreams.backend.health_check.path", Some(13)),
            ("upstreams.backend.health_check.interval_ms", Some(14)),
            ("upstreams.backend.health_check.timeout_ms", Some(15)),
            ("upstreams.backend.health_check.healthy_threshold", Some(16)),
            (
                "upstreams.backend.health_check.unhealthy_threshold",
                Some(17)
            ),
            ("upstreams.backend.health_check.expect_status", Some(18)),
            ("upstreams.empty.peers", Some(21)),
            ("upstreams.\"my pool\"", Some(23)),
        ]
    );
    let e = error_for(&errors, "upstreams.backend.peers[1]");
    assert_eq!(
        e.to_string(),
        "line 7, column 22: upstreams.backend.peers[1]: must be an IP:port address such as \
         \"10.0.0.11:8080\" (DNS names are not supported)"
    );
    assert_eq!(
        error_for(&errors, "upstreams.backend.peers[2]").message,
        "port must not be 0"
    );
    assert_eq!(
        error_for(&errors, "upstreams.backend.peers[4]").message,
        "duplicates upstreams.backend.peers[3]"
    );
    assert_eq!(
        error_for(&errors, "upstreams.backend.health_check.interval_ms").message,
        "must be at least 100"
    );
}

/// A PEM file with one `CERTIFICATE` section (the config checks the PEM, not the DER).
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";

#[test]
fn upstream_tls_loads_with_its_values() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, format!("comment lines are fine\n{CA_PEM}{CA_PEM}")).expect("write");
    let src = format!(
        "{AUTH}\n[upstreams.b]\npeers = [\"10.0.0.1:443\"]\n[upstreams.b.tls]\n\
         server_name = \"api.internal\"\nca_file = {:?}\n\
         [upstreams.c]\npeers = [\"10.0.0.2:443\"]\ntls = {{ server_name = \"10.0.0.2\" }}\n",
        ca.display().to_string()
    );
    let config = Config::from_toml_str(&src).expect("valid");
    assert_eq!(
        config.upstreams["b"].tls,
        Some(UpstreamTlsConfig {
            server_name: "api.internal".into(),
            ca_file: Some(ca),
        })
    );
    // Without ca_file: the system's roots.
    let c = config.upstreams["c"].tls.as_ref().expect("tls");
    assert_eq!((c.server_name.as_str(), &c.ca_file), ("10.0.0.2", &None));
    let text = toml::to_string(&config).expect("serializes");
    assert_eq!(Config::from_toml_str(&text), Ok(config));
}

#[test]
fn upstream_tls_rules() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key_pem = dir.path().join("key.pem");
    std::fs::write(
        &key_pem,
        format!("{CA_PEM}-----BEGIN PRIVATE KEY-----\nMIIBAA==\n-----END PRIVATE KEY-----\n"),
    )
    .expect("write");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not PEM at all\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let upstream = |name: &str, tls: &str| {
        format!("[upstreams.{name}]\npeers = [\"10.0.0.1:443\"]\n[upstreams.{name}.tls]\n{tls}\n")
    };
    let ca = |path: &Path| {
        format!(
            "server_name = \"a.test\"\nca_file = {:?}",
            path.display().to_string()
        )
    };
    let src = [
        AUTH.to_owned(),
        upstream("a", "ca_file = \"/dev/null\""),
        upstream("f", &ca(dir.path())),
        upstream("b", "server_name = \"not a name!\""),
        upstream("c", &ca(&missing)),
        upstream("d", &ca(&key_pem)),
        upstream("e", &ca(&empty)),
    ]
    .concat();
    let errors = errors(&src);
    let keys: Vec<&str> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            "upstreams.a.tls.server_name",
            "upstreams.a.tls.ca_file",
            "upstreams.b.tls.server_name",
            "upstreams.c.tls.ca_file",
            "upstreams.d.tls.ca_file",
            "upstreams.e.tls.ca_file",
            "upstreams.f.tls.ca_file",
        ]
    );
    let message = |key: &str| error_for(&errors, key).message.clone();
    assert!(
        message("upstreams.a.tls.server_name")
            .starts_with("is required when [upstreams.a.tls] is set"),
        "{errors:#?}"
    );
    // Devices and directories are refused unread (`/dev/zero` would never end).
    assert_eq!(
        message("upstreams.a.tls.ca_file"),
        "/dev/null is not a regular file"
    );
    assert!(message("upstreams.f.tls.ca_file").ends_with("is not a regular file"));
    assert!(message("upstreams.b.tls.server_name").contains("must be a DNS name"));
    assert!(
        message("upstreams.c.tls.ca_file")
            .starts_with(&format!("cannot read {}", missing.display()))
    );
    assert!(message("upstreams.d.tls.ca_file").contains("PrivateKey section"));
    assert!(message("upstreams.e.tls.ca_file").contains("holds no PEM certificate"));

    let e = &self::errors("[upstreams.b]\npeers = []\n[upstreams.b.tls]\nsni = \"x\"\n")[0];
    assert!(e.message.contains("unknown field `sni`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("upstreams.b.tls.sni"));
}

#[test]
fn upstream_without_peers_is_named_even_when_peers_is_absent() {
    let errors = errors(&format!(
        "{AUTH}\n[upstreams.backend]\nretry_connect = true\n"
    ));
    assert_eq!(located(&errors), [("upstreams.backend.peers", None)]);
}

#[test]
fn unknown_keys_in_routes_and_upstreams_are_named() {
    let e = &errors("[[routes]]\nname = \"a\"\n\n[[routes]]\npath = \"/\"\n")[0];
    assert!(e.message.contains("unknown field `path`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("routes[1].path"));
    assert_eq!(e.line, Some(5));

    let e = &errors("[upstreams.b]\npeers = []\n[upstreams.b.health_check]\nintervl_ms = 5\n")[0];
    assert!(e.message.contains("unknown field `intervl_ms`"), "{e}");
    assert_eq!(
        e.key.as_deref(),
        Some("upstreams.b.health_check.intervl_ms")
    );
    assert_eq!(e.line, Some(4));

    let e = &errors("[upstreams.b]\npeers = []\nbalance = \"random\"\n")[0];
    assert_eq!(e.key.as_deref(), Some("upstreams.b.balance"));
    assert_eq!(e.line, Some(3));
}

#[test]
fn existence_cache_policy_loads_and_rejects_unknown_keys() {
    let base = "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let config = Config::from_toml_str(&format!(
        "{base}[features]\nexistence_cache = false\n[existence_cache]\npositive_ttl_ms = 250\non_error = \"unavailable\"\n"
    ))
    .expect("valid");
    assert!(!config.features.existence_cache);
    assert_eq!(config.existence_cache.positive_ttl_ms, 250);
    assert_eq!(
        config.existence_cache.on_error,
        agentgate_config::OnError::Unavailable
    );
    let errors = Config::from_toml_str(&format!("{base}[existence_cache]\npositive_ttl = 5\n"))
        .expect_err("unknown key");
    assert!(
        errors[0].to_string().contains("positive_ttl"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].line, Some(5));
    let errors = Config::from_toml_str(&format!("{base}[existence_cache]\nmax_entries = 0\n"))
        .expect_err("invalid");
    assert_eq!(
        errors[0].key.as_deref(),
        Some("existence_cache.max_entries")
    );
    assert_eq!(errors[0].line, Some(5));
}

#[test]
fn route_rate_limits_load_and_bad_ones_name_the_key() {
    let base = "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let config = Config::from_toml_str(&format!(
        "{base}[[routes]]\nname = \"a\"\n[routes.rate_limit]\nper_second = 5\nkey = \"session_id\"\n"
    ))
    .expect("valid");
    let limit = config.routes[0].rate_limit.as_ref().expect("rate limit");
    assert_eq!(limit.per_second, 5);
    let errors = Config::from_toml_str(&format!(
        "{base}[[routes]]\nname = \"a\"\n[routes.rate_limit]\nper_second = 0\n"
    ))
    .expect_err("zero rate");
    assert_eq!(
        errors[0].key.as_deref(),
        Some("routes[0].rate_limit.per_second")
    );
    assert_eq!(errors[0].line, Some(7));
    let errors = Config::from_toml_str(&format!(
        "{base}[[routes]]\nname = \"a\"\n[routes.rate_limit]\nkey = \"header\"\n"
    ))
    .expect_err("header without name");
    assert_eq!(
        errors[0].key.as_deref(),
        Some("routes[0].rate_limit.key_header")
    );
    let errors = Config::from_toml_str(&format!(
        "{base}[[routes]]\nname = \"a\"\n[routes.rate_limit]\nper_secnd = 3\n"
    ))
    .expect_err("typo");
    assert!(errors[0].to_string().contains("per_secnd"), "{}", errors[0]);
}

#[test]
fn route_priority_queues_load_and_bad_ones_name_the_key() {
    let base = "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let config = Config::from_toml_str(&format!(
        "{base}[[routes]]\nname = \"a\"\n[routes.priority_queue]\nmax_in_flight = 8\nstream_budget = 100\n"
    ))
    .expect("valid");
    let queue = config.routes[0].priority_queue.as_ref().expect("queue");
    assert_eq!((queue.max_in_flight, queue.stream_budget), (8, 100));
    let errors = Config::from_toml_str(&format!(
        "{base}[[routes]]\nname = \"a\"\n[routes.priority_queue]\nmax_in_flight = 0\n"
    ))
    .expect_err("zero slots");
    assert_eq!(
        errors[0].key.as_deref(),
        Some("routes[0].priority_queue.max_in_flight")
    );
    assert_eq!(errors[0].line, Some(7));
}

#[test]
fn priorities_and_key_bounds_name_the_key_and_never_echo_a_misplaced_api_key() {
    let base = "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n[[routes]]\nname = \"a\"\n";
    let config = Config::from_toml_str(&format!(
        "{base}[routes.priority_queue]\ntrusted_proxies = [\"10.0.0.5\"]\napi_key_priorities = {{ \"0123456789abcdef\" = 7 }}\nstreams = \"all\"\n[routes.rate_limit]\nkey = \"api_key\"\nmax_keys = 10\n"
    ))
    .expect("valid");
    let queue = config.routes[0].priority_queue.as_ref().expect("queue");
    assert_eq!(queue.api_key_priorities["0123456789abcdef"], 7);
    assert_eq!(
        config.routes[0]
            .rate_limit
            .as_ref()
            .expect("limit")
            .max_keys,
        10
    );
    for (bad, key) in [
        (
            "[routes.priority_queue]\ndefault_priority = 12\n",
            "routes[0].priority_queue.default_priority",
        ),
        (
            "[routes.priority_queue]\napi_key_priorities = { \"0123456789abcdef\" = 10 }\n",
            "routes[0].priority_queue.api_key_priorities",
        ),
        (
            "[routes.priority_queue]\napi_key_priorities = { \"sk-live-secret-api-key\" = 3 }\n",
            "routes[0].priority_queue.api_key_priorities",
        ),
        (
            "[routes.rate_limit]\nmax_keys = 0\n",
            "routes[0].rate_limit.max_keys",
        ),
    ] {
        let errors = Config::from_toml_str(&format!("{base}{bad}")).expect_err(bad);
        assert_eq!(errors[0].key.as_deref(), Some(key), "{bad}");
        let text = errors.iter().map(ToString::to_string).collect::<String>();
        assert!(!text.contains("sk-live-secret"), "{text}");
    }
}

#[test]
fn sse_sharing_loads_and_each_misplaced_or_broken_key_is_named_with_its_line() {
    let ok = format!(
        r#"{AUTH}
[upstreams.feeds]
peers = ["127.0.0.1:9001"]
[[routes]]
name = "private"
kind = "sse"
path_prefix = "/me/"
upstream = "feeds"
credential_headers = ["x-api-key"]
[[routes]]
name = "public"
kind = "sse"
upstream = "feeds"
share = "public"
"#
    );
    let config = Config::from_toml_str(&ok).expect("valid sharing");
    assert_eq!(config.routes[0].share, SseShare::Credentials);
    assert_eq!(config.routes[0].credential_headers, ["x-api-key"]);
    assert_eq!(config.routes[1].share, SseShare::Public);

    let bad = format!(
        r#"{AUTH}
[upstreams.feeds]
peers = ["127.0.0.1:9001"]
[[routes]]
name = "proxied"
kind = "upstream"
upstream = "feeds"
share = "public"
credential_headers = ["x-api-key"]
[[routes]]
name = "public"
kind = "sse"
upstream = "feeds"
share = "public"
credential_headers = ["x-api-key"]
[[routes]]
name = "private"
kind = "sse"
upstream = "feeds"
credential_headers = ["X-Api-Key", ""]
"#
    );
    let errors = errors(&bad);
    let line = |key: &str| error_for(&errors, key).line;
    assert_eq!(line("routes[0].share"), Some(12));
    assert_eq!(line("routes[0].credential_headers"), Some(13));
    assert!(
        error_for(&errors, "routes[1].credential_headers")
            .message
            .contains("share = \"public\"")
    );
    assert_eq!(line("routes[1].credential_headers"), Some(19));
    assert_eq!(line("routes[2].credential_headers[0]"), Some(24));
    assert!(
        error_for(&errors, "routes[2].credential_headers[1]")
            .message
            .contains("lower-case header name")
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let unknown = errors_of_share("\"everyone\"");
    assert!(unknown.contains("share"), "{unknown}");
}

/// The error of an sse route whose `share` is `value`.
fn errors_of_share(value: &str) -> String {
    let src = format!(
        "{AUTH}\n[upstreams.u]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"s\"\n\
         kind = \"sse\"\nupstream = \"u\"\nshare = {value}\n"
    );
    format!("{:?}", errors(&src))
}

#[test]
fn canary_is_parsed_with_defaults_and_each_broken_key_is_named_with_its_line() {
    let ok = format!(
        r#"{AUTH}
[upstreams.stable]
peers = ["127.0.0.1:9001"]
[upstreams.next]
peers = ["127.0.0.1:9002"]
[[routes]]
name = "api"
kind = "upstream"
upstream = "stable"
canary = {{ upstream = "next", weight = 5 }}
"#
    );
    let config = Config::from_toml_str(&ok).expect("valid canary");
    let canary = config.routes[0].canary.as_ref().expect("canary set");
    assert_eq!(canary.upstream, "next");
    assert!((canary.weight - 5.0).abs() < f64::EPSILON);
    assert_eq!(canary.header, "x-agentgate-canary");
    assert_eq!(canary.cookie, "agentgate_canary");

    let bad = format!(
        r#"{AUTH}
[upstreams.stable]
peers = ["127.0.0.1:9001"]
[[routes]]
name = "api"
kind = "upstream"
upstream = "stable"
[routes.canary]
upstream = "stable"
weight = 101
header = "X-Canary"
cookie = "a;b"
[[routes]]
name = "agent"
canary = {{ upstream = "missing" }}
"#
    );
    let errors = errors(&bad);
    let line = |key: &str| error_for(&errors, key).line;
    assert_eq!(line("routes[0].canary.upstream"), Some(13));
    assert_eq!(line("routes[0].canary.weight"), Some(14));
    assert_eq!(line("routes[0].canary.header"), Some(15));
    assert_eq!(line("routes[0].canary.cookie"), Some(16));
    assert!(
        error_for(&errors, "routes[1].canary")
            .message
            .contains("upstream")
    );
    assert!(
        error_for(&errors, "routes[1].canary.upstream")
            .message
            .contains("[upstreams.missing]")
    );
}

#[test]
fn naive_baseline_switches_load_and_default_on() {
    let base = "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let defaults = Config::from_toml_str(base).expect("valid");
    assert!(defaults.features.pipelining && defaults.features.hash_state);
    let naive = Config::from_toml_str(&format!(
        "{base}[features]\nexistence_cache = false\nsse_fanout = false\nparallel_tools = false\npipelining = false\nhash_state = false\n"
    ))
    .expect("valid");
    assert_eq!(
        naive.features,
        agentgate_config::FeaturesConfig {
            existence_cache: false,
            sse_fanout: false,
            parallel_tools: false,
            pipelining: false,
            hash_state: false,
        }
    );
    let errors = Config::from_toml_str(&format!("{base}[features]\npipelineing = false\n"))
        .expect_err("unknown key");
    assert!(
        errors[0].to_string().contains("pipelineing"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].line, Some(5));
}

/// The commented-out `[telemetry]` example of the reference file, uncommented.
fn reference_telemetry_example() -> String {
    let mut lines = REFERENCE_TOML.lines().skip_while(|l| *l != "# [telemetry]");
    let mut example = String::new();
    for line in lines.by_ref() {
        let Some(toml) = line.strip_prefix("# ") else {
            break;
        };
        if !toml.starts_with('#') {
            example.push_str(toml);
            example.push('\n');
        }
    }
    example
}

#[test]
fn telemetry_is_off_by_default_and_the_reference_example_is_valid() {
    assert_eq!(Config::default().telemetry, None);
    let example = reference_telemetry_example();
    assert!(example.starts_with("[telemetry]\n"), "{example}");
    let config = Config::from_toml_str(&format!("{REFERENCE_TOML}{example}"))
        .unwrap_or_else(|e| panic!("{e:#?}\n{example}"));
    let telemetry = config.telemetry.expect("telemetry set");
    assert_eq!(telemetry.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(telemetry.service_name, "agentgate");
    assert_eq!(telemetry.sample_ratio, 1.0);
    assert_eq!(telemetry.export_timeout(), Duration::from_secs(10));
    assert_eq!(telemetry.batch_delay(), Duration::from_secs(5));
    assert_eq!(
        telemetry,
        agentgate_config::TelemetryConfig {
            otlp_endpoint: telemetry.otlp_endpoint.clone(),
            ..Default::default()
        }
    );
}

#[test]
fn bad_telemetry_values_name_their_keys() {
    let all = errors(&format!(
        "{AUTH}\n[telemetry]\notlp_endpoint = \"https://collector:4318/v1/traces\"\n\
         service_name = \" \"\nsample_ratio = 1.5\nexport_timeout_ms = 0\n\
         batch_delay_ms = 60001\n"
    ));
    for key in [
        "telemetry.otlp_endpoint",
        "telemetry.service_name",
        "telemetry.sample_ratio",
        "telemetry.export_timeout_ms",
        "telemetry.batch_delay_ms",
    ] {
        let e = error_for(&all, key);
        assert!(e.line.is_some(), "{key} is located: {e:?}");
    }
    let missing = errors(&format!("{AUTH}\n[telemetry]\nservice_name = \"gw\"\n"));
    assert_eq!(missing[0].key.as_deref(), Some("telemetry.otlp_endpoint"));
    for bad in [
        "http://",
        "http:///v1/traces",
        "127.0.0.1:4318",
        "http://a b/",
    ] {
        let errors = errors(&format!("{AUTH}\n[telemetry]\notlp_endpoint = \"{bad}\"\n"));
        error_for(&errors, "telemetry.otlp_endpoint");
    }
    let typo = errors(&format!(
        "{AUTH}\n[telemetry]\notlp_endpoint = \"http://c:4318\"\nsample_rate = 0.5\n"
    ));
    assert!(typo[0].message.contains("sample_rate"), "{typo:?}");
}

#[test]
fn quotas_must_be_at_least_one() {
    let src =
        format!("{AUTH}\n[store.quotas]\nmax_active_sessions_per_key = 0\nmax_session_bytes = 0\n");
    let found = errors(&src);
    for key in [
        "store.quotas.max_active_sessions_per_key",
        "store.quotas.max_session_bytes",
    ] {
        let e = error_for(&found, key);
        assert!(e.message.starts_with("must be at least 1"), "{e}");
        assert!(e.line.is_some(), "{key} is located: {e}");
    }
    let typo = errors(&format!("{AUTH}\n[store.quotas]\nmax_sessions = 5\n"));
    assert!(typo[0].to_string().contains("max_sessions"), "{}", typo[0]);
}

#[test]
fn a_durable_route_loads_its_bounds_and_refuses_zero_ones() {
    let src = format!(
        "{AUTH}[[routes]]\nname = \"streams\"\nkind = \"durable\"\npath_prefix = \"/streams/\"\n\
         [routes.durable]\nread = \"public\"\nmax_append_bytes = 4096\n"
    );
    let config = Config::from_toml_str(&src).expect("valid");
    let durable = config.routes[0].durable.as_ref().expect("[routes.durable]");
    assert_eq!(config.routes[0].kind, RouteKind::Durable);
    assert_eq!(durable.read, agentgate_config::DurableAccess::Public);
    assert_eq!(durable.write, agentgate_config::DurableAccess::ApiKey);
    assert_eq!(durable.max_append_bytes, 4096);

    let zero = src.replace("max_append_bytes = 4096", "max_append_bytes = 0");
    let refused = errors(&zero);
    let message = error_for(&refused, "routes[0].durable.max_append_bytes").to_string();
    assert!(message.contains("at least 1"), "{message}");
    let on_agent = src.replace("kind = \"durable\"", "kind = \"agent\"");
    let refused = errors(&on_agent);
    let message = error_for(&refused, "routes[0].durable").to_string();
    assert!(message.contains("only kind = \"durable\""), "{message}");
    let proxied = src.replace(
        "path_prefix = \"/streams/\"",
        "path_prefix = \"/streams/\"\nupstream = \"x\"",
    );
    let refused = errors(&proxied);
    let message = error_for(&refused, "routes[0].upstream").to_string();
    assert!(message.contains("must not be set"), "{message}");
}

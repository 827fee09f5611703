//! `deploy/`: the alert rules pass `promtool check rules`, and every `agentgate_*` series the
//! rules and the Grafana dashboard use is one the gateway exports (read from the metrics of
//! an application built with routes, policies, an upstream group and tools).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/alerts.yml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json");

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules", RULES])
        .output()
        .expect("promtool runs (scripts/setup installs the `prometheus` package)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `agentgate_...` name in `text`.
fn series_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("agentgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if end > "agentgate_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_series_the_rules_and_dashboard_use_is_exported() {
    let config = agentgate_config::Config::from_toml_str(
        r#"
[auth]
api_keys = ["deploy-test-key-0123456789"]
stream_token_secret = "deploy-test-secret-deploy-test-secret-0"
[agent]
dispatch = "none"
[[routes]]
name = "agent"
kind = "agent"
path_prefix = "/v2/"
[routes.rate_limit]
per_second = 10
[routes.priority_queue]
max_in_flight = 4
[[routes]]
name = "web"
kind = "upstream"
upstream = "web"
[upstreams.web]
peers = ["127.0.0.1:9"]
"#,
    )
    .expect("valid config");
    let app = agentgate::app::App::build(&config)
        .await
        .expect("app builds");
    let exported = app.metrics().render();
    // Metric families, from `# TYPE <name> <kind>` lines.
    let families: Vec<(String, String)> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect();
    let is_exported = |name: &str| {
        families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[""],
            };
            suffixes.iter().any(|s| name == format!("{family}{s}"))
        })
    };
    let mut used = series_names(&std::fs::read_to_string(RULES).expect("rules"));
    let dashboard = std::fs::read_to_string(DASHBOARD).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    used.extend(series_names(&dashboard));
    assert!(used.len() > 10, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !is_exported(n)).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported: {missing:?}\n{exported}"
    );
}

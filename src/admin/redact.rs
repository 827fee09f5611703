//! `GET /admin/config`'s view of the configuration: secrets replaced, and every URL shown
//! without its credentials.
//!
//! Secrets are named keys (API keys, the token secret, admin tokens, the Sentinel master
//! password). URLs are found by
//! shape rather than by key, so a URL-valued setting added later is covered without
//! touching this file: every string holding `scheme://` or starting with `/` goes through
//! [`redact_url`], which keeps scheme, host, port and path and replaces userinfo
//! (`user:password@`, or a token used as the user name) and the query and fragment (where
//! `?api_key=` tends to live).

use agentgate_config::Config;
use serde_json::{Value, json};

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// The configuration as JSON with API keys, the token secret, admin tokens and the Sentinel
/// master password replaced and
/// every URL's userinfo, query and fragment redacted ([`redact_url`]).
pub fn redacted(config: &Config) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    redact_urls(&mut value);
    for list in [
        "/auth/api_keys",
        "/auth/stream_token_secrets",
        "/server/admin_tokens",
    ] {
        if let Some(secrets) = value.pointer_mut(list).and_then(Value::as_array_mut) {
            for secret in secrets {
                *secret = json!(REDACTED);
            }
        }
    }
    for secret in [
        "/auth/stream_token_secret",
        "/store/redis/sentinel_master_password",
    ] {
        if let Some(secret) = value.pointer_mut(secret).filter(|v| !v.is_null()) {
            *secret = json!(REDACTED);
        }
    }
    value
}

/// Every string of `value` that is a URL or a path, redacted in place.
fn redact_urls(value: &mut Value) {
    match value {
        Value::String(text) if text.contains("://") || text.starts_with('/') => {
            *text = redact_url(text);
        }
        Value::Array(items) => items.iter_mut().for_each(redact_urls),
        Value::Object(fields) => fields.values_mut().for_each(redact_urls),
        _ => {}
    }
}

/// `url` with its userinfo, query and fragment replaced by [`REDACTED`]:
/// `redis://app:hunter2@10.0.0.1:6379/0?x=1` → `redis://<redacted>@10.0.0.1:6379/0?<redacted>`.
/// Works on origin-form paths too (`/v1/traces?key=k` → `/v1/traces?<redacted>`); text
/// without credentials comes back unchanged.
pub fn redact_url(url: &str) -> String {
    // Split off the query and fragment first: an '@' or '/' inside them is not structure.
    let (base, tail) = match url.find(['?', '#']) {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let mut out = String::with_capacity(url.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            // The authority ends at the first '/'; userinfo is what precedes its last '@'.
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((_userinfo, host)) => {
                    out.push_str(REDACTED);
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    // Keep the separator, so the reader sees that there was a query (or fragment).
    if let Some(separator) = tail.chars().next() {
        out.push(separator);
        out.push_str(REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_query_and_fragment_are_redacted() {
        for (url, shown) in [
            (
                "redis://app:hunter2@10.0.0.1:6379/0",
                "redis://<redacted>@10.0.0.1:6379/0",
            ),
            (
                "rediss://:only-password@host:6380",
                "rediss://<redacted>@host:6380",
            ),
            ("redis://10.0.0.2:6379", "redis://10.0.0.2:6379"),
            (
                "http://tok3n@collector:4318/v1/traces?api_key=k#frag",
                "http://<redacted>@collector:4318/v1/traces?<redacted>",
            ),
            (
                "http://collector:4318/v1/traces#x@y",
                "http://collector:4318/v1/traces#<redacted>",
            ),
            ("http://u:p@ss@host/a@b", "http://<redacted>@host/a@b"),
            ("/v1/check?token=t", "/v1/check?<redacted>"),
            ("/healthz", "/healthz"),
            ("no url at all", "no url at all"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn secrets_and_url_credentials_are_redacted() {
        let mut config = Config::default();
        config.auth.api_keys = vec!["k-0123456789abcdef".to_owned()];
        config.auth.stream_token_secret = "s".repeat(40);
        config.auth.stream_token_secrets = vec!["r".repeat(40)];
        config.server.admin_tokens = vec!["admin-token-0123456789".to_owned()];
        config.store.redis.urls = vec![
            "redis://app:hunter2@10.0.0.1:6379/0".to_owned(),
            "redis://10.0.0.2:6379".to_owned(),
        ];
        config.store.redis.sentinel_master_password = Some("master-pw-0123456789".to_owned());
        config.telemetry = Some(agentgate_config::TelemetryConfig {
            otlp_endpoint: "http://otel:s3cret@127.0.0.1:4318/v1/traces?key=qs3cret".to_owned(),
            ..Default::default()
        });
        let value = redacted(&config);
        let text = value.to_string();
        for secret in [
            "k-0123456789abcdef",
            &"s".repeat(40),
            &"r".repeat(40),
            "admin-token-0123456789",
            "hunter2",
            "s3cret",
            "master-pw-0123456789",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(
            value["store"]["redis"]["urls"],
            json!([
                "redis://<redacted>@10.0.0.1:6379/0",
                "redis://10.0.0.2:6379"
            ])
        );
        assert_eq!(
            value["telemetry"]["otlp_endpoint"],
            "http://<redacted>@127.0.0.1:4318/v1/traces?<redacted>"
        );
        assert_eq!(value["auth"]["api_keys"], json!([REDACTED]));
        assert_eq!(value["server"]["admin_tokens"], json!([REDACTED]));
        assert_eq!(
            value["store"]["redis"]["sentinel_master_password"],
            json!(REDACTED)
        );
        // Unset stays unset (null), not a made-up secret.
        let plain = redacted(&Config::default());
        assert_eq!(
            plain["store"]["redis"]["sentinel_master_password"],
            Value::Null
        );
    }
}

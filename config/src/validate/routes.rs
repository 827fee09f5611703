//! `[[routes]]`: names, matching, the route's policies (rate limit, priority queue, checked
//! by their `validate()`), upstreams, canaries and stream sharing.

use agentgate_middleware::policy::LimitStore;

use super::{Problems, duplicates, is_lower_header_name, is_plain_host};
use crate::locate::{is_bare_key, key_name};
use crate::schema::{CanaryConfig, Config, RouteConfig, RouteKind, SseShare, StoreKind};

/// The methods a route may list.
const ROUTE_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

impl Config {
    pub(super) fn check_routes(&self, p: &mut Problems) {
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            if route.name.is_empty() {
                p.push(&key("name"), "is required");
            } else if !is_bare_key(&route.name) {
                p.push(
                    &key("name"),
                    "must contain only ASCII letters, digits, '_' and '-'",
                );
            }
            if let Some(host) = &route.host
                && !is_plain_host(host)
            {
                p.push(
                    &key("host"),
                    "must be a host name or IP address (IPv6 in brackets) without scheme, \
                     port or path; leave the key out to match any host",
                );
            }
            p.require(
                route.path_prefix.starts_with('/'),
                &key("path_prefix"),
                "must start with '/'",
            );
            if let Some(queue) = &route.priority_queue {
                p.policy(&key("priority_queue"), queue.validate());
            }
            if let Some(queue) = &route.priority_queue
                && !queue
                    .api_key_priorities
                    .keys()
                    .all(|id| is_key_fingerprint(id))
            {
                // The entry is not named: it may be an API key pasted by mistake.
                p.push(
                    &key("priority_queue.api_key_priorities"),
                    "keys must be API key fingerprints, 16 lower-case hex digits (printf %s \
                     \"$KEY\" | sha256sum | cut -c1-16), never the API keys themselves",
                );
            }
            if let Some(limit) = &route.rate_limit {
                p.require(
                    limit.store == LimitStore::Local || self.store.kind == StoreKind::Redis,
                    &key("rate_limit.store"),
                    "\"redis\" needs the Redis session store (store.kind = \"redis\"): the \
                     buckets live in the same Redis",
                );
                // The same `validate()` the layer's constructor runs.
                p.policy(&key("rate_limit"), limit.validate());
            }
            for (j, method) in route.methods.iter().enumerate() {
                if !ROUTE_METHODS.contains(&method.as_str()) {
                    p.push(
                        &format!("routes[{i}].methods[{j}]"),
                        format!("must be one of {} (upper-case)", ROUTE_METHODS.join(", ")),
                    );
                }
            }
            for (j, first) in duplicates(route.methods.iter().enumerate()) {
                p.push(
                    &format!("routes[{i}].methods[{j}]"),
                    format!("duplicates routes[{i}].methods[{first}]"),
                );
            }
            match (route.kind, &route.upstream) {
                (RouteKind::Upstream | RouteKind::Sse, None) => p.push(
                    &key("upstream"),
                    "is required when kind = \"upstream\" or \"sse\": name an \
                     [upstreams.NAME] table",
                ),
                (RouteKind::Upstream | RouteKind::Sse, Some(name))
                    if !self.upstreams.contains_key(name) =>
                {
                    p.push(
                        &key("upstream"),
                        format!("no [upstreams.{}] table is defined", key_name(name)),
                    );
                }
                (RouteKind::Agent | RouteKind::Durable, Some(_)) => p.push(
                    &key("upstream"),
                    "must not be set when kind = \"agent\" or \"durable\" (set kind = \
                     \"upstream\" to proxy)",
                ),
                _ => {}
            }
            if let Some(canary) = &route.canary {
                self.check_canary(p, i, route, canary);
            }
            check_sse_share(p, i, route);
            check_durable(p, i, route);
        }
        let named = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, route)| !route.name.is_empty())
            .map(|(i, route)| (i, route.name.as_str()));
        for (i, first) in duplicates(named) {
            p.push(
                &format!("routes[{i}].name"),
                format!("duplicates routes[{first}].name"),
            );
        }
    }

    pub(super) fn check_canary(
        &self,
        p: &mut Problems,
        i: usize,
        route: &RouteConfig,
        canary: &CanaryConfig,
    ) {
        let key = |field: &str| format!("routes[{i}].canary.{field}");
        if route.kind != RouteKind::Upstream {
            p.push(
                &format!("routes[{i}].canary"),
                "only kind = \"upstream\" routes take a canary",
            );
        }
        if canary.upstream.is_empty() {
            p.push(
                &key("upstream"),
                "is required: name an [upstreams.NAME] table",
            );
        } else if !self.upstreams.contains_key(&canary.upstream) {
            p.push(
                &key("upstream"),
                format!(
                    "no [upstreams.{}] table is defined",
                    key_name(&canary.upstream)
                ),
            );
        } else if route.upstream.as_ref() == Some(&canary.upstream) {
            p.push(
                &key("upstream"),
                format!("must differ from routes[{i}].upstream"),
            );
        }
        p.require(
            (0.0..=100.0).contains(&canary.weight),
            &key("weight"),
            "must be a percentage from 0 to 100",
        );
        p.require(
            canary.header.is_empty() || is_lower_header_name(&canary.header),
            &key("header"),
            "must be a lower-case header name (letters, digits, '-'), or \"\" for none",
        );
        p.require(
            canary.cookie.is_empty() || is_bare_key(&canary.cookie),
            &key("cookie"),
            "must contain only ASCII letters, digits, '_' and '-', or be \"\" for none",
        );
    }
}

/// `share` and `credential_headers` of route `i`: `kind = "sse"` only; header names valid;
/// no headers to compare on a public stream.
fn check_sse_share(p: &mut Problems, i: usize, route: &RouteConfig) {
    let key = |field: &str| format!("routes[{i}].{field}");
    if route.kind != RouteKind::Sse {
        p.require(
            route.share == SseShare::Credentials,
            &key("share"),
            "only kind = \"sse\" routes share streams",
        );
        p.require(
            route.credential_headers.is_empty(),
            &key("credential_headers"),
            "only kind = \"sse\" routes share streams",
        );
        return;
    }
    p.require(
        route.share == SseShare::Credentials || route.credential_headers.is_empty(),
        &key("credential_headers"),
        "must be empty with share = \"public\": a public stream compares no credentials",
    );
    for (j, name) in route.credential_headers.iter().enumerate() {
        p.require(
            is_lower_header_name(name),
            &format!("routes[{i}].credential_headers[{j}]"),
            "must be a lower-case header name (letters, digits, '-')",
        );
    }
}

/// `[routes.durable]` of route `i`: only on `kind = "durable"`; every bound at least 1.
fn check_durable(p: &mut Problems, i: usize, route: &RouteConfig) {
    let Some(durable) = &route.durable else {
        return;
    };
    if route.kind != RouteKind::Durable {
        p.push(
            &format!("routes[{i}].durable"),
            "only kind = \"durable\" routes take a [routes.durable] table",
        );
    }
    let bounds = [
        ("max_append_bytes", durable.max_append_bytes),
        ("max_stream_bytes", durable.max_stream_bytes),
        ("max_read_bytes", durable.max_read_bytes),
        ("max_streams", durable.max_streams),
        ("max_producers", durable.max_producers),
        ("long_poll_timeout_ms", durable.long_poll_timeout_ms),
        ("sse_max_ms", durable.sse_max_ms),
        ("max_ttl_secs", durable.max_ttl_secs),
    ];
    for (field, value) in bounds {
        p.require(
            value >= 1,
            &format!("routes[{i}].durable.{field}"),
            "must be at least 1",
        );
    }
}

/// An API key's fingerprint as agentgate shows it: 16 lower-case hex digits.
fn is_key_fingerprint(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

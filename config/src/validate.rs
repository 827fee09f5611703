//! The rules a parsed [`Config`] must satisfy beyond its types.
//!
//! [`Config::validate`] checks everything and reports every broken rule, so one run of the
//! gateway shows all the fixes a file needs.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::Path;

use agentgate_middleware::rate_limit::{LimitStore, PolicyError, RateLimitLayer};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::{self, SectionKind};

use crate::error::ValidationError;
use crate::locate::{is_bare_key, key_name};
use crate::published::GENERATE_HINT;
use crate::schema::{
    AuthConfig, Config, Dispatch, RouteConfig, RouteKind, SseShare, StoreKind, ToolKind,
    UpstreamTlsConfig,
};

/// Shortest accepted API key, in characters.
const MIN_API_KEY_LEN: usize = 16;
/// Shortest accepted stream-token secret, in bytes (256 bits for HMAC-SHA256).
const MIN_SECRET_BYTES: usize = 32;
/// Most accepted `server.threads`.
const MAX_THREADS: usize = 1024;
/// Shortest accepted health-check interval, in milliseconds.
const MIN_HEALTH_INTERVAL_MS: u64 = 100;
/// Largest accepted `upstreams.NAME.tls.ca_file` (a system bundle is about 200 KiB).
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// The methods a route may list.
const ROUTE_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

impl Config {
    /// Checks the rules documented on each field and returns every broken one.
    ///
    /// Sections that are switched off are not checked: `[store.redis]` only when
    /// `store.kind = "redis"`, `agent.demo.deltas` only when `agent.dispatch = "demo"`.
    /// Upstreams are checked whether or not a route uses them.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut problems = Problems::default();
        self.check_server(&mut problems);
        self.check_auth(&mut problems);
        self.check_store(&mut problems);
        self.check_sse(&mut problems);
        self.check_agent(&mut problems);
        self.check_existence_cache(&mut problems);
        self.check_routes(&mut problems);
        self.check_upstreams(&mut problems);
        self.check_tools(&mut problems);
        self.check_telemetry(&mut problems);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(problems.0)
        }
    }

    fn check_server(&self, p: &mut Problems) {
        let s = &self.server;
        p.require(
            s.read_buffer_bytes <= 1_048_576,
            "server.read_buffer_bytes",
            "must be at most 1048576",
        );
        p.require(
            !s.listen.is_empty(),
            "server.listen",
            "at least one address is required",
        );
        for (i, first) in duplicates(s.listen.iter().enumerate()) {
            p.push(
                &format!("server.listen[{i}]"),
                format!("duplicates server.listen[{first}]"),
            );
        }
        p.require(
            s.threads <= MAX_THREADS,
            "server.threads",
            format!("must be at most {MAX_THREADS} (0 = one per CPU core)"),
        );
        for (key, path) in [
            ("server.pid_file", &s.pid_file),
            ("server.upgrade_sock", &s.upgrade_sock),
        ] {
            if path
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                p.push(key, "must not be empty; leave the key out for the default");
            }
        }
        if let Some(dir) = &s.runtime_dir {
            p.require(
                dir.is_absolute(),
                "server.runtime_dir",
                "must be an absolute path; leave the key out for the default",
            );
        }
        self.check_admin(p);
        p.require(
            s.max_body_bytes >= 1024,
            "server.max_body_bytes",
            "must be at least 1024",
        );
        p.require(
            s.shutdown_grace_secs <= 3600,
            "server.shutdown_grace_secs",
            "must be at most 3600 (one hour)",
        );
        self.check_tls(p);
        self.check_limits(p);
    }

    fn check_tls(&self, p: &mut Problems) {
        let Some(tls) = &self.server.tls else { return };
        p.require(
            !tls.listen.is_empty(),
            "server.tls.listen",
            "at least one address is required",
        );
        for (i, addr) in tls.listen.iter().enumerate() {
            // Port 0 binds a free port each time: never the same listener.
            if addr.port() == 0 {
                continue;
            }
            if let Some(j) = self.server.listen.iter().position(|a| a == addr) {
                p.push(
                    &format!("server.tls.listen[{i}]"),
                    format!("is also server.listen[{j}]"),
                );
            }
        }
        for (i, first) in duplicates(tls.listen.iter().enumerate()) {
            p.push(
                &format!("server.tls.listen[{i}]"),
                format!("duplicates server.tls.listen[{first}]"),
            );
        }
        p.require(
            !tls.certificates.is_empty(),
            "server.tls.certificates",
            "at least one certificate is required",
        );
        for (i, cert) in tls.certificates.iter().enumerate() {
            for (name, path) in [("chain", &cert.chain), ("key", &cert.key)] {
                p.require(
                    !path.as_os_str().is_empty(),
                    &format!("server.tls.certificates[{i}].{name}"),
                    "must name a PEM file",
                );
            }
        }
    }

    fn check_limits(&self, p: &mut Problems) {
        let l = &self.server.limits;
        p.require(
            l.head_timeout_ms >= 100,
            "server.limits.head_timeout_ms",
            "must be at least 100",
        );
        p.require(
            (1..=3600).contains(&l.idle_timeout_secs),
            "server.limits.idle_timeout_secs",
            "must be 1..=3600",
        );
        p.require(
            l.write_timeout_ms >= 100,
            "server.limits.write_timeout_ms",
            "must be at least 100",
        );
        p.require(
            l.max_connections >= 1,
            "server.limits.max_connections",
            "must be at least 1",
        );
        p.require(
            (1..=l.max_connections.max(1)).contains(&l.max_connections_per_address),
            "server.limits.max_connections_per_address",
            "must be at least 1 and at most server.limits.max_connections",
        );
        p.require(
            l.max_requests_per_connection >= 1,
            "server.limits.max_requests_per_connection",
            "must be at least 1",
        );
    }

    /// `server.admin_hosts` and `server.admin_tokens`: a token is required on a listener
    /// other machines can reach.
    fn check_admin(&self, p: &mut Problems) {
        let s = &self.server;
        for (i, host) in s.admin_hosts.iter().enumerate() {
            p.require(
                is_plain_host(host),
                &format!("server.admin_hosts[{i}]"),
                "must be a host name such as \"gw1.internal\" (letters, digits, '-', '.', '_'; \
                 no port, no scheme; IP addresses are always accepted)",
            );
        }
        check_secrets(p, "server.admin_tokens", &s.admin_tokens);
        if let Some(addr) = s.admin_listen
            && !addr.ip().is_loopback()
        {
            p.require(
                !s.admin_tokens.is_empty(),
                "server.admin_tokens",
                format!(
                    "at least one token is required when server.admin_listen ({addr}) is not \
                     a loopback address: the admin endpoints would be open to the network"
                ),
            );
        }
    }

    fn check_auth(&self, p: &mut Problems) {
        let a = &self.auth;
        p.require(
            !a.api_keys.is_empty(),
            "auth.api_keys",
            "at least one API key is required",
        );
        check_secrets(p, "auth.api_keys", &a.api_keys);
        self.check_token_secrets(p);
        p.require(
            a.stream_token_ttl_secs >= 1,
            "auth.stream_token_ttl_secs",
            "must be at least 1",
        );
        if !self.listens_on_loopback_only() {
            for key in self.published_credentials() {
                p.push(
                    &key,
                    format!(
                        "is an example value published with agentgate, refused while \
                         a public listener (server.listen, server.tls.listen) is not on loopback; \
                         {GENERATE_HINT}"
                    ),
                );
            }
        }
    }

    fn check_token_secrets(&self, p: &mut Problems) {
        let a = &self.auth;
        if a.stream_token_secrets.is_empty() {
            p.require(
                a.stream_token_secret.len() >= MIN_SECRET_BYTES,
                "auth.stream_token_secret",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (it is {}); {GENERATE_HINT}",
                    a.stream_token_secret.len()
                ),
            );
            return;
        }
        p.require(
            a.stream_token_secret.is_empty(),
            "auth.stream_token_secret",
            "set either auth.stream_token_secret or auth.stream_token_secrets, not both",
        );
        p.require(
            a.stream_token_secrets.len() <= AuthConfig::MAX_TOKEN_SECRETS,
            "auth.stream_token_secrets",
            format!("at most {} secrets", AuthConfig::MAX_TOKEN_SECRETS),
        );
        for (i, secret) in a.stream_token_secrets.iter().enumerate() {
            p.require(
                secret.len() >= MIN_SECRET_BYTES,
                &format!("auth.stream_token_secrets[{i}]"),
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (it is {}); {GENERATE_HINT}",
                    secret.len()
                ),
            );
        }
        for (i, first) in duplicates(a.stream_token_secrets.iter().enumerate()) {
            p.push(
                &format!("auth.stream_token_secrets[{i}]"),
                format!("duplicates auth.stream_token_secrets[{first}]"),
            );
        }
    }

    fn check_store(&self, p: &mut Problems) {
        let s = &self.store;
        p.require(
            s.events_maxlen >= 1,
            "store.events_maxlen",
            "must be at least 1",
        );
        p.require(
            s.retention_secs >= 1,
            "store.retention_secs",
            "must be at least 1",
        );
        p.require(
            s.session_ttl_secs >= 1,
            "store.session_ttl_secs",
            "must be at least 1",
        );
        p.require(
            s.quotas.max_active_sessions_per_key >= 1,
            "store.quotas.max_active_sessions_per_key",
            "must be at least 1 (there is no unlimited; set a large value)",
        );
        p.require(
            s.quotas.max_session_bytes >= 1,
            "store.quotas.max_session_bytes",
            "must be at least 1 (there is no unlimited; set a large value)",
        );
        if s.kind != StoreKind::Redis {
            return;
        }
        let r = &s.redis;
        if r.urls.is_empty() {
            p.push(
                "store.redis.urls",
                "at least one URL is required when store.kind = \"redis\"",
            );
        } else if !r.cluster && r.urls.len() != 1 {
            p.push(
                "store.redis.urls",
                format!(
                    "exactly one URL is required when cluster = false (found {}); \
                     set store.redis.cluster = true to use several seed nodes",
                    r.urls.len()
                ),
            );
        }
        for (i, url) in r.urls.iter().enumerate() {
            let key = format!("store.redis.urls[{i}]");
            match url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
            {
                None => p.push(&key, "must start with redis:// or rediss://"),
                Some("") => p.push(&key, "must name a host after the scheme"),
                Some(_) => {}
            }
        }
        for (i, first) in duplicates(r.urls.iter().enumerate()) {
            p.push(
                &format!("store.redis.urls[{i}]"),
                format!("duplicates store.redis.urls[{first}]"),
            );
        }
        p.require(
            r.timeout_ms >= 1,
            "store.redis.timeout_ms",
            "must be at least 1",
        );
        p.require(
            r.connect_timeout_ms >= 1,
            "store.redis.connect_timeout_ms",
            "must be at least 1",
        );
    }

    fn check_sse(&self, p: &mut Problems) {
        let s = &self.sse;
        p.require(
            s.heartbeat_secs >= 1,
            "sse.heartbeat_secs",
            "must be at least 1",
        );
        p.require(s.retry_ms >= 1, "sse.retry_ms", "must be at least 1");
        p.require(
            (1..=10_000).contains(&s.replay_batch),
            "sse.replay_batch",
            "must be between 1 and 10000",
        );
        if let Err(agentgate_middleware::sse::fanout::PolicyError::Zero(field)) =
            s.fanout.validate()
        {
            p.push(&format!("sse.fanout.{field}"), "must be at least 1");
        }
        p.require(
            (1..=256).contains(&s.multiplex.max_streams),
            "sse.multiplex.max_streams",
            "must be between 1 and 256",
        );
        p.require(
            s.multiplex.heartbeat_ms >= 1,
            "sse.multiplex.heartbeat_ms",
            "must be at least 1",
        );
    }

    fn check_telemetry(&self, p: &mut Problems) {
        let Some(t) = &self.telemetry else {
            return;
        };
        if t.otlp_endpoint.is_empty() {
            p.push(
                "telemetry.otlp_endpoint",
                "is required, e.g. \"http://127.0.0.1:4318/v1/traces\"",
            );
        } else {
            let host = t
                .otlp_endpoint
                .strip_prefix("http://")
                .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
            let ok = host.is_some_and(|h| !h.is_empty())
                && !t
                    .otlp_endpoint
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control());
            p.require(
                ok,
                "telemetry.otlp_endpoint",
                "must be an http:// URL with a host, e.g. \"http://127.0.0.1:4318/v1/traces\"",
            );
        }
        p.require(
            !t.service_name.trim().is_empty(),
            "telemetry.service_name",
            "must not be empty",
        );
        p.require(
            (0.0..=1.0).contains(&t.sample_ratio),
            "telemetry.sample_ratio",
            "must be between 0.0 and 1.0",
        );
        for (key, ms) in [
            ("telemetry.export_timeout_ms", t.export_timeout_ms),
            ("telemetry.batch_delay_ms", t.batch_delay_ms),
        ] {
            p.require(
                (1..=60_000).contains(&ms),
                key,
                "must be between 1 and 60000",
            );
        }
    }

    fn check_existence_cache(&self, p: &mut Problems) {
        let c = &self.existence_cache;
        p.require(
            c.max_entries >= 1,
            "existence_cache.max_entries",
            "must be at least 1",
        );
        p.require(
            c.positive_ttl_ms <= 3_600_000,
            "existence_cache.positive_ttl_ms",
            "must be at most 3600000 (one hour)",
        );
        p.require(
            c.negative_ttl_ms <= 3_600_000,
            "existence_cache.negative_ttl_ms",
            "must be at most 3600000 (one hour)",
        );
    }

    fn check_agent(&self, p: &mut Problems) {
        let a = &self.agent;
        if a.dispatch == Dispatch::Demo {
            p.require(
                a.demo.deltas >= 1,
                "agent.demo.deltas",
                "must be at least 1 when agent.dispatch = \"demo\"",
            );
        }
        p.require(
            a.demo.pace_ms <= 60_000,
            "agent.demo.pace_ms",
            "must be at most 60000 (one minute)",
        );
    }

    fn check_routes(&self, p: &mut Problems) {
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
            if let Some(queue) = &route.priority_queue
                && let Err(error) = queue.validate()
            {
                p.push(
                    &key(&format!("priority_queue.{}", error.key())),
                    error.to_string(),
                );
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
                // The layer's own constructor is the one source of truth for what is valid.
                if let Err(error) = RateLimitLayer::from_policy(limit) {
                    let field = match &error {
                        PolicyError::Zero(field) => field,
                        PolicyError::MissingKeyHeader | PolicyError::InvalidKeyHeader(_) => {
                            "key_header"
                        }
                    };
                    p.push(&key(&format!("rate_limit.{field}")), error.to_string());
                }
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
                (RouteKind::Agent, Some(_)) => p.push(
                    &key("upstream"),
                    "must not be set when kind = \"agent\" (set kind = \"upstream\" to proxy)",
                ),
                _ => {}
            }
            if let Some(canary) = &route.canary {
                self.check_canary(p, i, route, canary);
            }
            check_sse_share(p, i, route);
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

    fn check_canary(
        &self,
        p: &mut Problems,
        i: usize,
        route: &crate::schema::RouteConfig,
        canary: &crate::schema::CanaryConfig,
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

    fn check_upstreams(&self, p: &mut Problems) {
        for (name, upstream) in &self.upstreams {
            let table = format!("upstreams.{}", key_name(name));
            let key = |field: &str| format!("{table}.{field}");
            p.require(
                is_bare_key(name),
                &table,
                "the name must contain only ASCII letters, digits, '_' and '-'",
            );
            p.require(
                !upstream.peers.is_empty(),
                &key("peers"),
                "at least one peer is required",
            );
            let mut addrs = Vec::new();
            for (i, peer) in upstream.peers.iter().enumerate() {
                let peer_key = format!("{table}.peers[{i}]");
                match peer.parse::<SocketAddr>() {
                    Err(_) => p.push(
                        &peer_key,
                        "must be an IP:port address such as \"10.0.0.11:8080\" \
                         (DNS names are not supported)",
                    ),
                    Ok(addr) if addr.port() == 0 => p.push(&peer_key, "port must not be 0"),
                    Ok(addr) => addrs.push((i, addr)),
                }
            }
            for (i, first) in duplicates(addrs) {
                p.push(
                    &format!("{table}.peers[{i}]"),
                    format!("duplicates {table}.peers[{first}]"),
                );
            }
            p.require(
                upstream.connect_timeout_ms >= 1,
                &key("connect_timeout_ms"),
                "must be at least 1",
            );
            p.require(
                upstream.idle_timeout_ms >= 1,
                &key("idle_timeout_ms"),
                "must be at least 1",
            );
            if let Some(tls) = &upstream.tls {
                check_upstream_tls(p, &format!("{table}.tls"), tls);
            }
            let Some(health) = &upstream.health_check else {
                continue;
            };
            let key = |field: &str| format!("{table}.health_check.{field}");
            p.require(
                health.path.starts_with('/'),
                &key("path"),
                "must start with '/'",
            );
            p.require(
                health.interval_ms >= MIN_HEALTH_INTERVAL_MS,
                &key("interval_ms"),
                format!("must be at least {MIN_HEALTH_INTERVAL_MS}"),
            );
            p.require(
                health.timeout_ms >= 1,
                &key("timeout_ms"),
                "must be at least 1",
            );
            p.require(
                health.healthy_threshold >= 1,
                &key("healthy_threshold"),
                "must be at least 1",
            );
            p.require(
                health.unhealthy_threshold >= 1,
                &key("unhealthy_threshold"),
                "must be at least 1",
            );
            p.require(
                (100..=599).contains(&health.expect_status),
                &key("expect_status"),
                "must be an HTTP status between 100 and 599",
            );
        }
    }
}

/// `[upstreams.NAME.tls]`: a name peers can be verified against, and a CA file that loads.
fn check_upstream_tls(p: &mut Problems, table: &str, tls: &UpstreamTlsConfig) {
    let key = |field: &str| format!("{table}.{field}");
    if tls.server_name.is_empty() {
        p.push(
            &key("server_name"),
            format!(
                "is required when [{table}] is set: the name sent as SNI and that the peers' \
                 certificates must be valid for, e.g. \"api.internal\""
            ),
        );
    } else {
        p.require(
            ServerName::try_from(tls.server_name.as_str()).is_ok(),
            &key("server_name"),
            "must be a DNS name such as \"api.internal\" or an IP address",
        );
    }
    if let Some(path) = &tls.ca_file
        && let Err(reason) = check_ca_file(path)
    {
        p.push(&key("ca_file"), reason);
    }
}

/// Reads `path` as PEM CA certificates: every recognised section a `CERTIFICATE`, at least
/// one of them (what the proxy's loader accepts).
fn check_ca_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    // Looked at before it is opened: a FIFO or a device (`/dev/zero`) would block or never end.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_CA_FILE_BYTES} bytes: not a CA bundle"
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut reader = text.as_slice();
    let mut certificates = 0;
    loop {
        match pem::from_buf(&mut reader) {
            Ok(None) => break,
            Ok(Some((SectionKind::Certificate, _))) => certificates += 1,
            Ok(Some((kind, _))) => {
                return Err(format!(
                    "{shown} holds a {kind:?} section: only CA certificates (CERTIFICATE) \
                     belong in it"
                ));
            }
            Err(e) => return Err(format!("{shown} is not valid PEM: {e}")),
        }
    }
    if certificates == 0 {
        return Err(format!(
            "{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(())
}

impl Config {
    fn check_tools(&self, p: &mut Problems) {
        let t = &self.tools;
        p.require(
            (1..=1024).contains(&t.max_parallel),
            "tools.max_parallel",
            "must be between 1 and 1024",
        );
        p.require(
            (1..=3_600_000).contains(&t.timeout_ms),
            "tools.timeout_ms",
            "must be between 1 and 3600000 (one hour)",
        );
        p.require(
            t.workers <= MAX_THREADS,
            "tools.workers",
            format!("must be at most {MAX_THREADS} (0 = one per CPU core)"),
        );
        p.require(
            t.queue_capacity >= 1,
            "tools.queue_capacity",
            "must be at least 1",
        );
        p.require(
            (1..=1000).contains(&t.max_calls),
            "tools.max_calls",
            "must be between 1 and 1000",
        );
        p.require(
            t.max_input_bytes >= 1,
            "tools.max_input_bytes",
            "must be at least 1",
        );
        p.require(
            t.max_batch_bytes >= t.max_input_bytes.max(1),
            "tools.max_batch_bytes",
            format!(
                "must be at least tools.max_input_bytes ({}), or a single call's input could not fit",
                t.max_input_bytes
            ),
        );
        p.require(
            t.max_output_bytes >= 1,
            "tools.max_output_bytes",
            "must be at least 1",
        );
        for (name, tool) in &t.tools {
            let table = format!("tools.{}", key_name(name));
            let key = |field: &str| format!("{table}.{field}");
            p.require(
                is_bare_key(name) && name.len() <= MAX_TOOL_NAME_LEN,
                &table,
                "the name must be 1 to 64 ASCII letters, digits, '_' and '-'",
            );
            if tool.timeout_ms == Some(0) {
                p.push(&key("timeout_ms"), "must be at least 1");
            }
            if tool.kind != ToolKind::Http {
                for (field, set) in [
                    ("upstream", tool.upstream.is_some()),
                    ("path", tool.path.is_some()),
                ] {
                    p.require(
                        !set,
                        &key(field),
                        format!(
                            "only applies to kind = \"http\" (this tool is {:?})",
                            tool.kind.as_str()
                        ),
                    );
                }
                continue;
            }
            match &tool.upstream {
                None => p.push(
                    &key("upstream"),
                    "is required when kind = \"http\": name an [upstreams.NAME] table",
                ),
                Some(upstream) if !self.upstreams.contains_key(upstream) => p.push(
                    &key("upstream"),
                    format!("no [upstreams.{}] table is defined", key_name(upstream)),
                ),
                Some(_) => {}
            }
            if let Some(path) = &tool.path {
                p.require(
                    path.starts_with('/') && path.chars().all(|c| c.is_ascii_graphic()),
                    &key("path"),
                    "must start with '/' and contain only visible ASCII characters",
                );
            }
        }
    }
}

/// Longest tool name, in characters.
const MAX_TOOL_NAME_LEN: usize = 64;

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

/// A non-empty lower-case header name: ASCII letters, digits and `-`.
fn is_lower_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `host` is a host name, IPv4 address or bracketed IPv6 address, with no scheme,
/// port or path.
/// The rules shared by lists of bearer secrets (`auth.api_keys`, `server.admin_tokens`):
/// visible ASCII without whitespace, at least [`MIN_API_KEY_LEN`] characters, no duplicates.
/// Messages never include a secret itself: error output ends up in logs.
fn check_secrets(p: &mut Problems, list: &str, secrets: &[String]) {
    for (i, secret) in secrets.iter().enumerate() {
        let key = format!("{list}[{i}]");
        if secret.chars().any(char::is_whitespace) {
            p.push(&key, "must not contain whitespace");
        } else if !secret.chars().all(|c| c.is_ascii_graphic()) {
            p.push(&key, "must contain only visible ASCII characters");
        }
        if secret.chars().count() < MIN_API_KEY_LEN {
            p.push(
                &key,
                format!("must be at least {MIN_API_KEY_LEN} characters long"),
            );
        }
    }
    for (i, first) in duplicates(secrets.iter().enumerate()) {
        p.push(
            &format!("{list}[{i}]"),
            format!("duplicates {list}[{first}]"),
        );
    }
}

fn is_plain_host(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
    }
}

/// `(index, index of its first occurrence)` for every repeated item of `(index, item)` pairs.
fn duplicates<T: Eq + Hash>(items: impl IntoIterator<Item = (usize, T)>) -> Vec<(usize, usize)> {
    let mut first_index: HashMap<T, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for (i, item) in items {
        let first = *first_index.entry(item).or_insert(i);
        if first != i {
            repeats.push((i, first));
        }
    }
    repeats
}

/// The broken rules found so far.
#[derive(Default)]
struct Problems(Vec<ValidationError>);

impl Problems {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ValidationError::new(key, message));
    }

    fn require(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.push(key, message);
        }
    }
}

/// An API key's fingerprint as agentgate shows it: 16 lower-case hex digits.
fn is_key_fingerprint(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

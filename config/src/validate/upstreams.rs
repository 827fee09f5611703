//! `[upstreams.NAME]`: peers, timeouts, TLS (server name, CA file) and health checks.

use std::net::SocketAddr;
use std::path::Path;

use rustls_pki_types::ServerName;
use rustls_pki_types::pem::{self, SectionKind};

use super::{Problems, duplicates};
use crate::locate::{is_bare_key, key_name};
use crate::schema::{Config, UpstreamTlsConfig};

/// Shortest accepted health-check interval, in milliseconds.
const MIN_HEALTH_INTERVAL_MS: u64 = 100;
/// Largest accepted `upstreams.NAME.tls.ca_file` (a system bundle is about 200 KiB).
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

impl Config {
    pub(super) fn check_upstreams(&self, p: &mut Problems) {
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

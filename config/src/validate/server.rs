//! `[server]`: listeners, admin access, TLS certificates, connection limits.

use super::{MAX_THREADS, Problems, check_secrets, duplicates, is_plain_host};
use crate::schema::Config;

impl Config {
    pub(super) fn check_server(&self, p: &mut Problems) {
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

    pub(super) fn check_tls(&self, p: &mut Problems) {
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

    pub(super) fn check_limits(&self, p: &mut Problems) {
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
    pub(super) fn check_admin(&self, p: &mut Problems) {
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
}

//! The admin listener's `Host` allow-list: the defence against DNS rebinding.
//!
//! A web page on `http://evil.example` can point `evil.example` at `127.0.0.1` after it
//! has loaded, and then read `http://evil.example:9901/admin/config` as a same-origin
//! request: the browser sends `Host: evil.example:9901`. The admin listener answers only
//! requests whose host is `localhost`, an IP address (a page can only be same-origin with
//! an IP-literal URL if that page came from the listener itself, so IP literals cannot be
//! rebound), or a name listed in `server.admin_hosts`. Anything else, and a request
//! without a host, gets 421 Misdirected Request with a JSON error.

use http::request::Parts;
use http::{StatusCode, header};

use crate::api::ApiError;

/// The longest part of a refused host quoted back in the error message.
const QUOTED_HOST_MAX: usize = 64;

/// The host names the admin listener answers to.
#[derive(Debug, Clone, Default)]
pub struct AdminHosts {
    /// `server.admin_hosts`, lower-case.
    names: Vec<String>,
}

impl AdminHosts {
    /// `localhost` and IP addresses, plus the `configured` names (`server.admin_hosts`).
    pub fn new(configured: &[String]) -> Self {
        Self {
            names: configured.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `host` (a host without port: `localhost`, `10.0.0.5`, `[::1]`) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let bare = host
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(host);
        bare.parse::<std::net::IpAddr>().is_ok()
            || host.eq_ignore_ascii_case("localhost")
            || self.names.iter().any(|n| host.eq_ignore_ascii_case(n))
    }

    /// Refuses a request whose host (the request target's authority, else `Host`) is not
    /// allowed.
    pub fn check(&self, parts: &Parts) -> Result<(), ApiError> {
        let authority = match parts.uri.authority() {
            Some(authority) => Some(authority.clone()),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::uri::Authority>().ok()),
        };
        match authority {
            Some(authority) if self.allows(authority.host()) => Ok(()),
            Some(authority) => {
                let host: String = authority.host().chars().take(QUOTED_HOST_MAX).collect();
                Err(misdirected(format!(
                    "Host {host:?} is not a name of this admin listener: it answers to \
                     localhost, IP addresses and server.admin_hosts (requests for other \
                     names may come from a page using DNS rebinding)"
                )))
            }
            None => Err(misdirected(
                "the request has no valid Host: the admin listener answers to localhost, IP \
                 addresses and server.admin_hosts"
                    .to_owned(),
            )),
        }
    }
}

fn misdirected(message: String) -> ApiError {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "host_not_allowed", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(host: Option<&str>, uri: &str) -> Parts {
        let mut req = http::Request::get(uri);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn loopback_names_ips_and_configured_names_only() {
        let hosts = AdminHosts::new(&["GW1.internal".to_owned()]);
        for ok in [
            "localhost:9901",
            "LOCALHOST",
            "127.0.0.1:9901",
            "[::1]:9901",
            "[::1]",
            "10.1.2.3",
            "gw1.internal:9901",
            "gw1.INTERNAL",
        ] {
            assert!(hosts.check(&parts(Some(ok), "/")).is_ok(), "{ok}");
        }
        for refused in [
            "evil.example:9901",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "gw1.internal.evil",
            "",
        ] {
            let e = hosts.check(&parts(Some(refused), "/")).unwrap_err();
            assert_eq!(e.status, StatusCode::MISDIRECTED_REQUEST, "{refused}");
            assert_eq!(e.code, "host_not_allowed");
        }
        assert!(hosts.check(&parts(None, "/")).is_err(), "no Host");
        // The request target's authority wins over the Host header (HTTP/1 absolute form).
        assert!(
            hosts
                .check(&parts(Some("localhost"), "http://evil.example/"))
                .is_err()
        );
        assert!(
            hosts
                .check(&parts(Some("evil.example"), "http://127.0.0.1:9901/"))
                .is_ok()
        );
    }
}

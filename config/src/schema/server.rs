use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on, e.g. `"0.0.0.0:8080"`; port 0 picks a free port.
    /// Default `"127.0.0.1:8080"` (loopback only, so a fresh install is not exposed).
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes; larger bodies get 413. At least 1024.
    /// Default 1_048_576 (1 MiB).
    pub max_body_bytes: u64,
    /// On shutdown, how long open requests and streams may run before they are cut, in seconds.
    /// At most 3600. Default 10.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_body_bytes: 1_048_576,
            shutdown_grace_secs: 10,
        }
    }
}

impl ServerConfig {
    /// [`shutdown_grace_secs`](Self::shutdown_grace_secs) as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

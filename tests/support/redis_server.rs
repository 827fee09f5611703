//! A private `redis-server` on a free loopback port, killed when dropped. Never the shared
//! 6379, never a fixed port; nothing is persisted.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, restartable) private Redis.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a fresh server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh server on a free port with extra `redis-server` arguments.
    ///
    /// A port found free can be taken before the server binds it (or, in cluster mode, its
    /// bus port, `port + 10000`, can be in use): a server that exits while starting is
    /// started again on another free port, a few times.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        for _ in 0..4 {
            if server.try_start() {
                return server;
            }
            server.port = free_port();
        }
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: as abrupt as a crash). Its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty).
    pub fn restart(&mut self) {
        if !self.try_start() {
            panic!("redis-server did not come up on 127.0.0.1:{}", self.port);
        }
    }

    /// Starts the server on its port; false if it exited before answering.
    fn try_start(&mut self) -> bool {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.command(&["PING"]).is_some_and(|r| r.contains("PONG")) {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs one command with `redis-cli` and returns its raw output.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every key in the server (SCAN, not KEYS).
    pub fn keys(&self) -> Vec<String> {
        let out = self
            .command(&["--scan", "--pattern", "*"])
            .unwrap_or_default();
        let mut keys: Vec<String> = out.lines().map(str::to_owned).collect();
        keys.sort();
        keys
    }

    /// Every key with its content, by type: a hash's fields (`HGETALL`), a stream's length
    /// (`XLEN`), a sorted set's members and scores (`ZRANGE .. WITHSCORES`), else the type.
    /// Two equal dumps mean nothing was written in between.
    pub fn dump(&self) -> Vec<(String, String)> {
        self.keys()
            .into_iter()
            .map(|key| {
                let kind = self.command(&["TYPE", &key]).unwrap_or_default();
                let content = match kind.trim() {
                    "hash" => self.command(&["HGETALL", &key]),
                    "stream" => self.command(&["XLEN", &key]),
                    "zset" => self.command(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
                    _ => Some(kind),
                };
                (key, content.unwrap_or_default())
            })
            .collect()
    }

    /// Calls of `command` (lowercase, e.g. "exists") recorded in `INFO commandstats`.
    pub fn command_calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]).unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Whether something accepts connections on the port.
    pub fn is_listening(&self) -> bool {
        TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, self.port)).is_ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

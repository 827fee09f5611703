//! A private Sentinel setup on free loopback ports: one master, one replica, three
//! Sentinels (quorum 2) with short detection and failover times, so a killed master is
//! replaced within a few seconds. Every process is killed by PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::{RedisServer, free_port};

/// The master name the Sentinels monitor.
pub const MASTER_NAME: &str = "agentgate";

/// One master, one replica, three Sentinels.
pub struct RedisSentinel {
    /// The master at start (after a failover, a replica or dead).
    pub master: RedisServer,
    /// The replica at start (after a failover, the master).
    pub replica: RedisServer,
    sentinels: Vec<SentinelProcess>,
}

/// One `redis-sentinel` process and its config directory (Sentinel rewrites its file).
struct SentinelProcess {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisSentinel {
    /// Starts everything and waits until the Sentinels know the replica and each other
    /// (so that they can agree on a failover).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`start`](Self::start), master and replica given `extra_args` (e.g.
    /// `--notify-keyspace-events Ex`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let master = RedisServer::start_with(extra_args);
        let master_port = master.port().to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &master_port];
        replica_args.extend_from_slice(extra_args);
        let replica = RedisServer::start_with(&replica_args);
        let sentinels = (0..3).map(|_| start_sentinel(master.port())).collect();
        let setup = Self {
            master,
            replica,
            sentinels,
        };
        setup.wait_for_replica();
        setup.wait_until("the sentinels to know the replica and each other", |s| {
            s.sentinels.iter().all(|p| {
                let info = sentinel_cli(p.port, &["SENTINEL", "MASTER", MASTER_NAME]);
                field(&info, "num-slaves") == Some("1")
                    && field(&info, "num-other-sentinels") == Some("2")
            })
        });
        setup
    }

    /// The Sentinels' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|p| format!("redis://127.0.0.1:{}", p.port))
            .collect()
    }

    /// The port of the master every Sentinel names, if they agree on one.
    pub fn named_master_port(&self) -> Option<u16> {
        let named: Vec<Option<u16>> = self
            .sentinels
            .iter()
            .map(|p| {
                let out = sentinel_cli(
                    p.port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
                );
                out.lines().nth(1).and_then(|port| port.trim().parse().ok())
            })
            .collect();
        named
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| named[0])
            .flatten()
    }

    /// Waits until the Sentinels name the (first) replica as the master: the failover done.
    pub fn wait_for_promotion(&self) {
        self.wait_until("the replica to be promoted", |s| {
            s.named_master_port() == Some(s.replica.port())
                && s.replica
                    .command(&["ROLE"])
                    .is_some_and(|r| r.starts_with("master"))
        });
    }

    /// Waits until the replica has synchronised with its master.
    pub fn wait_for_replica(&self) {
        self.wait_until("the replica to sync", |s| {
            s.replica
                .command(&["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
    }

    fn wait_until(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }
}

/// Starts one Sentinel watching the master on `master_port`: down after 500 ms without an
/// answer, a failover attempt at most every 2 s.
fn start_sentinel(master_port: u16) -> SentinelProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    for _ in 0..4 {
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 500\n\
                 sentinel failover-timeout {MASTER_NAME} 2000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.path().display()
            ),
        )
        .expect("sentinel.conf");
        let mut child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel must be installed (apt-get install redis-sentinel)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sentinel_cli(port, &["PING"]).contains("PONG") {
                return SentinelProcess {
                    port,
                    child,
                    _dir: dir,
                };
            }
            if child.try_wait().ok().flatten().is_some() {
                break; // the port was taken meanwhile: another one
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("redis-sentinel did not come up");
}

/// `redis-cli` against the Sentinel on `port`; empty on failure.
fn sentinel_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// The value after `name` in redis-cli's one-item-per-line answer.
fn field<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = answer.lines();
    lines.find(|l| l.trim() == name)?;
    lines.next().map(str::trim)
}

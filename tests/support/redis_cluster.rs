//! A private Redis Cluster on free loopback ports: three masters, optionally one replica
//! each (so a killed master is replaced by its replica within a few seconds), expired-key
//! events on. Every node is killed by PID when dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use super::redis_server::RedisServer;

/// Masters in every test cluster.
const MASTERS: usize = 3;

/// `redis-server --cluster-enabled yes` nodes joined with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters, no replicas.
    pub fn start() -> Self {
        Self::start_with_replicas(0)
    }

    /// Three masters with `replicas` replicas each; waits until every node reports
    /// `cluster_state:ok` and knows every other node.
    pub fn start_with_replicas(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..MASTERS * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    // Short enough that a failover takes a few seconds.
                    "--cluster-node-timeout",
                    "2000",
                    // A replica takes over however long its master was gone.
                    "--cluster-replica-validity-factor",
                    "0",
                    "--notify-keyspace-events",
                    "Ex",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        let total = cluster.nodes.len();
        cluster.wait_until("the cluster to be ready", |c| {
            c.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{total}"))
                })
            })
        });
        if replicas > 0 {
            cluster.wait_until("every replica to sync", |c| {
                c.nodes.iter().all(|n| {
                    let info = n.command(&["INFO", "replication"]).unwrap_or_default();
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            });
        }
        cluster
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node serving `key`'s slot as master now (asked of a live node).
    pub fn master_of(&self, key: &str) -> usize {
        let slot = self
            .live()
            .find_map(|n| n.command(&["CLUSTER", "KEYSLOT", key]))
            .and_then(|s| s.trim().parse::<u16>().ok())
            .expect("a live node answers CLUSTER KEYSLOT");
        self.live()
            .find_map(|n| {
                let out = n.command(&["CLUSTER", "NODES"])?;
                owner_port(&out, slot)
            })
            .and_then(|port| self.nodes.iter().position(|n| n.port() == port))
            .expect("a live node names the slot's master")
    }

    /// Moves `key`'s slot, with its keys, from its master to another master (the
    /// `CLUSTER SETSLOT` / `MIGRATE` steps of a resharding); returns the new master.
    pub fn move_slot_of(&self, key: &str) -> usize {
        let from = self.master_of(key);
        let to = (0..self.nodes.len())
            .find(|&i| i != from && self.is_master(i))
            .expect("another master");
        let slot = self.nodes[from]
            .command(&["CLUSTER", "KEYSLOT", key])
            .expect("CLUSTER KEYSLOT");
        let slot = slot.trim();
        let id = |i: usize| {
            self.nodes[i]
                .command(&["CLUSTER", "MYID"])
                .expect("CLUSTER MYID")
                .trim()
                .to_owned()
        };
        let (from_id, to_id) = (id(from), id(to));
        let run = |i: usize, args: &[&str]| {
            let out = self.nodes[i].command(args).unwrap_or_default();
            assert!(!out.contains("ERR"), "{args:?} on node {i}: {out}");
            out
        };
        run(to, &["CLUSTER", "SETSLOT", slot, "IMPORTING", &from_id]);
        run(from, &["CLUSTER", "SETSLOT", slot, "MIGRATING", &to_id]);
        let keys = run(from, &["CLUSTER", "GETKEYSINSLOT", slot, "1000"]);
        let keys: Vec<&str> = keys
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if !keys.is_empty() {
            let port = self.nodes[to].port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(&keys);
            run(from, &args);
        }
        for i in (0..self.nodes.len()).filter(|&i| self.is_master(i)) {
            run(i, &["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
        }
        to
    }

    /// Whether node `i` is a live master.
    fn is_master(&self, i: usize) -> bool {
        self.nodes[i]
            .command(&["ROLE"])
            .is_some_and(|role| role.lines().next() == Some("master"))
    }

    /// Kills node `i` (SIGKILL, its data gone).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Waits until every live node reports `cluster_state:ok` again (after a failover).
    pub fn wait_for_ok(&self) {
        self.wait_until("the cluster to be ok again", |c| {
            c.live().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        });
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The nodes that are running.
    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_listening())
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }
}

/// The port of the live master owning `slot` in `CLUSTER NODES` output (a line per node:
/// id, `ip:port@bus`, flags, master, ping, pong, epoch, link, then slots or ranges).
fn owner_port(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let owns = fields.iter().skip(8).any(|range| {
            let mut bounds = range.splitn(2, '-').map(|b| b.parse::<u16>().ok());
            match (bounds.next().flatten(), bounds.next()) {
                (Some(lo), Some(Some(hi))) => lo <= slot && slot <= hi,
                (Some(one), None) => one == slot,
                _ => false,
            }
        });
        let addr = fields.get(1)?.split('@').next()?;
        owns.then(|| addr.rsplit(':').next()?.parse().ok())
            .flatten()
    })
}

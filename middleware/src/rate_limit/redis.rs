//! [`RedisGcra`]: a [`SharedGcra`] in Redis — one Lua script, one round trip, no module.
//!
//! Each bucket is one Redis string holding its *theoretical arrival time* (TAT, µs on the
//! Redis server's clock, so gateways with skewed clocks agree). The script reads `TIME`,
//! decides, and on success stores the new TAT with a `PX` expiry that ends when the bucket
//! is full again, so idle keys vanish by themselves. A refusal writes nothing.
//!
//! One key per call: works on Redis Cluster (the key's slot decides the node) and on managed
//! Redis without modules (plain `EVALSHA`; the first call after a restart loads the script).

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionLike;

use super::Quota;
use super::shared::{CheckFuture, SharedGcra, StoreUnavailable, Verdict};

/// GCRA on the Redis server's clock. `KEYS[1]`: the bucket. `ARGV[1]`: emission interval in
/// µs. `ARGV[2]`: burst. Returns `{1, remaining}` or `{0, retry_after_us}`.
const GCRA_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, allow_at - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / interval)}
"#;

/// A [`SharedGcra`] over any redis-rs async connection (a `ConnectionManager`, a
/// `MultiplexedConnection` or a Cluster connection): the gateway passes the store's
/// connection, so rate limiting opens no connection of its own.
pub struct RedisGcra<C> {
    conn: C,
    /// Shared with every check in flight (its source and hash are not copied per call).
    script: Arc<Script>,
    timeout: Duration,
}

impl<C> std::fmt::Debug for RedisGcra<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGcra")
            .field("script", &self.script.get_hash())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<C> RedisGcra<C> {
    /// Buckets in the Redis behind `conn`; a check that takes longer than `timeout` fails.
    pub fn new(conn: C, timeout: Duration) -> Self {
        Self {
            conn,
            script: Arc::new(Script::new(GCRA_LUA)),
            timeout,
        }
    }
}

impl<C> SharedGcra for RedisGcra<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn check(&self, key: &str, quota: Quota) -> CheckFuture {
        let mut conn = self.conn.clone();
        let script = Arc::clone(&self.script);
        let key = key.to_owned();
        let timeout = self.timeout;
        Box::pin(async move {
            let interval = u64::try_from(quota.interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let mut invocation = script.key(key);
            invocation.arg(interval).arg(quota.burst);
            let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
            let (allowed, value) = tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| {
                    StoreUnavailable(format!("no answer within {} ms", timeout.as_millis()))
                })?
                .map_err(|e| StoreUnavailable(e.to_string()))?;
            let value = u64::try_from(value).unwrap_or(0);
            Ok(if allowed == 1 {
                Verdict::Allowed {
                    remaining: u32::try_from(value).unwrap_or(u32::MAX),
                }
            } else {
                Verdict::Limited {
                    retry_after: Duration::from_micros(value),
                }
            })
        })
    }
}

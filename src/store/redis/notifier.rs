//! The notifier: the process's ONE notification connection, however many readers are
//! connected. It pattern-subscribes to every session's channel (`ag:*:notify`) and to
//! expired-key events, and wakes the local readers of a session ([`WatchRegistry`]) with the
//! events a notice carries, so a reader that keeps up reads nothing. After a reconnect the
//! subscription is restored and every reader re-reads, so notices lost while disconnected
//! cost nothing. On Sentinel it subscribes on the master last named
//! ([`super::sentinel`]) and moves with it: a failover is one more reconnect.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};

use super::connection::manager_config;
use super::keys::{EXPIRED_PATTERN, NOTIFY_PATTERN, session_of_channel, session_of_meta_key};
use super::sentinel::{Master, SentinelMaster};
use super::{RedisSettings, parse_id};
use crate::store::watch::{Batch, WatchRegistry};
use crate::store::{Event, PresenceFeed};

/// Holds the process's one notification connection: pattern-subscribes to every session's
/// channel and wakes local readers. Pings every second so a dropped connection is noticed
/// and re-established even when no message flows; the subscription confirmation that
/// follows every (re)subscribe wakes all readers to re-read what they may have missed.
/// `connections` is kept at the number of connections the store holds.
pub(super) async fn run_notifier(
    settings: RedisSettings,
    mut sentinel: Option<SentinelMaster>,
    watches: Arc<WatchRegistry>,
    presence: PresenceFeed,
    connections: Gauge,
) {
    let on_push = {
        let watches = Arc::clone(&watches);
        move |push: PushInfo| -> Result<(), redis::aio::SendError> {
            match push.kind {
                PushKind::PMessage => {
                    // data: pattern, channel, payload
                    if let Some(Value::BulkString(channel)) = push.data.get(1)
                        && let Some(id) = session_of_channel(channel)
                    {
                        watches.notify_with(&id, || push.data.get(2).and_then(notice_batch));
                    } else if let Some(Value::BulkString(key)) = push.data.get(2)
                        && let Some(id) = session_of_meta_key(key)
                    {
                        // A keyspace event: the payload is the expired key.
                        presence.changed(&id);
                    }
                }
                PushKind::PSubscribe => {
                    // (Re)subscribed: whatever happened meanwhile was not heard.
                    watches.notify_all();
                    presence.unknown();
                }
                _ => {}
            }
            Ok(())
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut subscribed = false;
    let mut conn = None;
    // On Sentinel: the master `conn` is (to be) opened to.
    let mut master: Option<Arc<Master>> = None;
    loop {
        if let Some(named) = sentinel.as_ref().map(SentinelMaster::current) {
            let moved = match (&named, &master) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (a, b) => a.is_some() != b.is_some(),
            };
            if moved {
                (conn, subscribed, master) = (None, false, named);
            }
        }
        let wait_for_master = sentinel.is_some() && master.is_none();
        if conn.is_none() && !wait_for_master {
            match open_notifier(&settings, master.as_deref(), on_push.clone()).await {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::warn!(error = %e, "redis notification connection failed"),
            }
        }
        if let Some(c) = &mut conn {
            let result = if subscribed {
                c.ping().await
            } else {
                match c.psubscribe(NOTIFY_PATTERN).await {
                    Ok(()) => c.psubscribe(EXPIRED_PATTERN).await,
                    Err(e) => Err(e),
                }
                .map(|()| subscribed = true)
            };
            if let Err(e) = &result {
                tracing::debug!(error = %e, "redis notification connection not ready");
            }
            // The command connection, plus this one while it is subscribed and answering.
            connections.set(1 + i64::from(result.is_ok() && subscribed));
        } else {
            connections.set(1);
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = master_moved(&mut sentinel) => {}
        }
    }
}

/// Waits until the Sentinels name another master (forever without Sentinel).
async fn master_moved(sentinel: &mut Option<SentinelMaster>) {
    match sentinel {
        Some(s) => s.changed().await,
        None => std::future::pending().await,
    }
}

/// The events a notification payload carries (`None` for a bare id or anything unexpected:
/// readers then read).
fn notice_batch(payload: &Value) -> Option<Batch> {
    let Value::BulkString(payload) = payload else {
        return None;
    };
    if payload.first() != Some(&b'{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Notice {
        a: String,
        e: Vec<(String, String, String)>,
    }
    let notice: Notice = serde_json::from_slice(payload).ok()?;
    let after = match notice.a.as_str() {
        "" => None,
        id => Some(parse_id(id).ok()?),
    };
    let events = notice
        .e
        .into_iter()
        .map(|(id, kind, data)| {
            Some(Event {
                id: parse_id(&id).ok()?,
                kind,
                data,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    (!events.is_empty()).then_some(Batch { after, events })
}

/// The notification connection: RESP3 (pub/sub on a regular connection), resubscribing by
/// itself after a reconnect.
enum NotifyConnection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl NotifyConnection {
    async fn psubscribe(&mut self, pattern: &str) -> redis::RedisResult<()> {
        match self {
            Self::Standalone(c) => c.psubscribe(pattern).await,
            Self::Cluster(c) => c.psubscribe(pattern).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Self::Standalone(c) => ping.query_async(c).await,
            Self::Cluster(c) => ping.query_async(c).await,
        }
    }
}

/// Opens the notification connection (RESP3), handing every push message to `on_push`: to
/// `master` on Sentinel, else to the configured URLs.
async fn open_notifier(
    settings: &RedisSettings,
    master: Option<&Master>,
    on_push: impl redis::aio::AsyncPushSender + Clone,
) -> redis::RedisResult<NotifyConnection> {
    let resp3 = |url: &String| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}protocol=resp3")
    };
    if settings.cluster {
        let client = ClusterClient::builder(settings.urls.iter().map(resp3))
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.timeout)
            .push_sender(on_push)
            .build()?;
        Ok(NotifyConnection::Cluster(
            client.get_async_connection().await?,
        ))
    } else {
        let client = match master {
            Some(master) => master.resp3_client()?,
            None => redis::Client::open(settings.urls.first().map(resp3).unwrap_or_default())?,
        };
        let config = manager_config(settings)
            .set_push_sender(on_push)
            .set_automatic_resubscription();
        Ok(NotifyConnection::Standalone(
            ConnectionManager::new_lazy_with_config(client, config)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_their_events_and_anything_else_means_read() {
        let notice = |text: &str| notice_batch(&Value::BulkString(text.as_bytes().to_vec()));
        let batch = notice(r#"{"a":"1-0","e":[["2-0","delta","{\"n\":1}"],["2-1","delta","{}"]]}"#)
            .expect("a notice");
        assert_eq!(batch.after, Some("1-0".parse().unwrap()));
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].data, r#"{"n":1}"#);
        assert_eq!(
            notice(r#"{"a":"","e":[["1-0","complete","{}"]]}"#).map(|b| b.after),
            Some(None)
        );
        for bad in [
            "1700000000000-0",                         // a bare id
            r#"{"a":"1-0","e":[]}"#,                   // nothing carried
            r#"{"a":"x","e":[["2-0","delta","{}"]]}"#, // bad id before
            r#"{"a":"1-0","e":[["y","delta","{}"]]}"#, // bad event id
            r#"{"a":"1-0","e":[["2-0","delta"]]}"#,    // short entry
            "{not json",
        ] {
            assert_eq!(notice(bad), None, "{bad}");
        }
        assert_eq!(notice_batch(&Value::Int(1)), None);
    }
}

//! Redis Sentinel: the master is killed (SIGKILL); writes answer 503 with `Retry-After`
//! (never a hang: the client's WAIT bounds every call) until the Sentinels promote the
//! replica, then succeed again without anyone touching the gateway, and a viewer that
//! stayed connected has every surviving event exactly once, in order. With
//! `ack_replicas = 1` a write no replica confirmed answers 503 `replicas_unconfirmed`.
//!
//! The tests print what they measured (the write-unavailability window, acknowledged
//! writes lost) for the record; they assert none of it but the loss and order properties.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Reply, within};
use crate::gateway::{
    Gateway, KEY, Session, blocking, ids_until, lost_in_failover, sentinel_config_with,
};
use crate::support::redis_sentinel::RedisSentinel;

/// Appends one delta; the raw reply.
async fn append_one(gateway: &Gateway, session: &Session, n: usize) -> Reply {
    let c = &gateway.client;
    c.send_call(
        c.post(&session.path("events"))
            .bearer(KEY)
            .json(&json!({"events": [{"kind": "delta", "data": {"n": n}}]})),
    )
    .await
}

/// The one id of a successful single-event append.
fn appended_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "append: {}", reply.text);
    reply.json["ids"][0].as_str().expect("an id").to_owned()
}

/// A 503 that tells the agent to come back: `Retry-After` and a JSON error code.
pub(crate) fn assert_retry_later(reply: &Reply, codes: &[&str]) {
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.header("retry-after"), Some("1"), "Retry-After");
    assert!(
        codes.contains(&reply.error_code()),
        "error code {:?} not among {codes:?}",
        reply.error_code()
    );
}

/// A session, once the store has learnt the master from the Sentinels (it connects lazily).
pub(crate) async fn first_session(gateway: &Gateway) -> Session {
    within("the store to find the master", async {
        loop {
            let c = &gateway.client;
            let reply = c
                .send_call(c.post("/v2/sessions").bearer(KEY).json(&json!({})))
                .await;
            if reply.status == 201 {
                return reply.json["id"].as_str().expect("id").to_owned();
            }
            assert_retry_later(&reply, &["store_unavailable"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    gateway.init().await
}

/// Kills the master mid-run and drives writes through the failover; see the module doc.
async fn failover(ack_replicas: u32) {
    let mut setup = blocking(RedisSentinel::start);
    let extra = format!(
        "timeout_ms = 1000\nconnect_timeout_ms = 300\nack_replicas = {ack_replicas}\nack_timeout_ms = 300"
    );
    let gateway = Gateway::start(&sentinel_config_with(&setup, &extra)).await;
    let session = first_session(&gateway).await;
    let mut viewer = gateway.stream(&session).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        acked.push(appended_id(&append_one(&gateway, &session, n).await));
    }

    blocking(|| setup.master.kill());
    let killed = Instant::now();
    let (mut refused, mut old_master_back, mut first_success) = (0, false, None);
    let deadline = killed + Duration::from_secs(60);
    let mut n = 20;
    // Until ten writes succeeded after the outage began.
    while acked.len() < 20 + 10 {
        assert!(Instant::now() < deadline, "writes did not recover");
        let reply = append_one(&gateway, &session, n).await;
        n += 1;
        if reply.status == 200 {
            assert!(refused > 0, "a write succeeded with the master just killed");
            first_success.get_or_insert_with(Instant::now);
            acked.push(appended_id(&reply));
            continue;
        }
        assert_retry_later(&reply, &["store_unavailable", "replicas_unconfirmed"]);
        refused += 1;
        // The dead node comes back once the replica replaced it and the gateway follows the
        // new master (it answers "replicas_unconfirmed" then: the master is up, its only
        // replica gone), never before: an empty master back on the old address would be
        // synced from, and a gateway not yet told of the move would write to it (Redis's
        // rule: a master without persistence must not restart by itself). It rejoins as a
        // replica.
        if !old_master_back
            && reply.error_code() == "replicas_unconfirmed"
            && setup.named_master_port() == Some(setup.replica.port())
        {
            blocking(|| setup.master.restart());
            old_master_back = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = first_success.map(|t| t - killed).unwrap_or_default();

    // The viewer, connected throughout, and a fresh replay from the start.
    let last = acked.last().expect("acknowledged writes").clone();
    let seen = ids_until(&mut viewer, &last).await;
    let replay = ids_until(&mut gateway.stream(&session).await, &last).await;
    let lost = lost_in_failover(&acked, &seen, &replay);
    eprintln!(
        "failover (ack_replicas = {ack_replicas}): writes unavailable for {} ms ({refused} \
         refused), {} of {} acknowledged writes lost: {lost:?}",
        window.as_millis(),
        lost.len(),
        acked.len()
    );
    if ack_replicas > 0 {
        assert!(
            lost.is_empty(),
            "replica-confirmed writes were lost: {lost:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_writes_resume_by_themselves() {
    failover(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_durable_acks_a_failover_loses_no_acknowledged_write() {
    failover(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_no_replica_confirmed_answers_503_naming_the_replicas() {
    let mut setup = blocking(RedisSentinel::start);
    let extra = "ack_replicas = 1\nack_timeout_ms = 200";
    let gateway = Gateway::start(&sentinel_config_with(&setup, extra)).await;
    let session = first_session(&gateway).await;
    appended_id(&append_one(&gateway, &session, 0).await);

    blocking(|| setup.replica.kill());
    let reply = append_one(&gateway, &session, 1).await;
    assert_retry_later(&reply, &["replicas_unconfirmed"]);
    assert!(
        reply.error_message().contains("0 of the 1 replicas")
            && reply.error_message().contains("store.redis.ack_replicas"),
        "{}",
        reply.text
    );

    blocking(|| {
        setup.replica.restart();
        setup.wait_for_replica();
    });
    appended_id(&append_one(&gateway, &session, 2).await);
    gateway.init().await;
}

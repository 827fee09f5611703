//! One conformance suite, run against both engines: the embedded memory store and Redis
//! (a private `redis-server` per test). Both must show the same semantics.
//!
//! Redis runs in every mode its `[features]` switches select, the naive baseline of the
//! benchmark included: pipelined (default), one command per round trip
//! (`pipelining = false`), JSON-string state (`hash_state = false`), and both off; and in
//! every topology: standalone, a 3-master Cluster, and Sentinel (a master found through three
//! sentinels, every write acknowledged by its replica: `ack_replicas = 1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use agentgate::store::idempotency::MAX_KEYS_PER_SESSION;
use agentgate::store::memory::{MemoryLimits, MemoryStore};
use agentgate::store::redis::{RedisSettings, RedisStore};
use agentgate::store::{
    Applied, COMPLETE_KIND, Completion, Event, EventId, Gap, IdempotencyKey, NewEvent, NewSession,
    Presence, Quotas, Replay, SessionId, SessionStore, StoreError,
};
use support::redis_cluster::RedisCluster;
use support::redis_sentinel::{MASTER_NAME, RedisSentinel};
use support::redis_server::RedisServer;

/// Limits every engine gets, unless a test overrides them.
#[derive(Clone, Copy)]
struct Limits {
    maxlen: u64,
    retention: Duration,
    session_ttl: Duration,
    max_sessions: u64,
    max_bytes: u64,
}

const DEFAULT: Limits = Limits {
    maxlen: 10_000,
    retention: Duration::from_secs(3600),
    session_ttl: Duration::from_secs(3600),
    max_sessions: 1_000,
    max_bytes: 16 * 1024 * 1024,
};

impl Limits {
    fn quotas(&self) -> Quotas {
        Quotas {
            max_active_sessions_per_key: self.max_sessions,
            max_session_bytes: self.max_bytes,
        }
    }
}

/// An engine under test; holds its Redis process alive.
struct Engine {
    store: Arc<dyn SessionStore>,
    /// Whether every expiry reaches the presence feed (Redis: with `notify-keyspace-events
    /// Ex`; on Cluster the store listens on every master).
    expiry_events: bool,
    _redis: Option<Box<dyn std::any::Any>>,
}

fn memory(limits: Limits) -> Engine {
    Engine {
        store: MemoryStore::new(MemoryLimits {
            events_maxlen: limits.maxlen as usize,
            retention: limits.retention,
            session_ttl: limits.session_ttl,
            quotas: limits.quotas(),
        }),
        expiry_events: true,
        _redis: None,
    }
}

/// How the Redis engine writes (`features.pipelining`, `features.hash_state`).
#[derive(Clone, Copy)]
struct Mode {
    pipelining: bool,
    hash_state: bool,
}

const OPTIMIZED: Mode = Mode {
    pipelining: true,
    hash_state: true,
};

async fn redis(limits: Limits) -> Engine {
    redis_in(OPTIMIZED, limits).await
}

async fn redis_in(mode: Mode, limits: Limits) -> Engine {
    // Expired-key events on, as docs/operations recommend for the existence cache.
    let server = RedisServer::start_with(&["--notify-keyspace-events", "Ex"]);
    let store = redis_store(vec![server.url()], false, mode, limits).await;
    Engine {
        store,
        expiry_events: true,
        _redis: Some(Box::new(server)),
    }
}

async fn redis_cluster(limits: Limits) -> Engine {
    let cluster = RedisCluster::start();
    let store = redis_store(cluster.urls(), true, OPTIMIZED, limits).await;
    Engine {
        store,
        expiry_events: true,
        _redis: Some(Box::new(cluster)),
    }
}

/// Redis Sentinel (a master, a replica, three sentinels): the store finds the master
/// through the sentinels, and every write waits for the replica (`ack_replicas = 1`).
async fn redis_sentinel(limits: Limits) -> Engine {
    let setup = tokio::task::spawn_blocking(|| {
        RedisSentinel::start_with(&["--notify-keyspace-events", "Ex"])
    })
    .await
    .expect("sentinel setup");
    let store = RedisStore::connect(RedisSettings {
        sentinel_master: Some(MASTER_NAME.to_owned()),
        ack_replicas: 1,
        ..redis_settings(setup.urls(), false, OPTIMIZED, limits)
    })
    .await
    .unwrap();
    // The store asks the sentinels for the master in the background: wait until it has one.
    let probe = sid("sentinel-probe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = store.exists(&probe).await {
        assert!(tokio::time::Instant::now() < deadline, "no master: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Engine {
        store,
        expiry_events: true,
        _redis: Some(Box::new(setup)),
    }
}

async fn redis_store(
    urls: Vec<String>,
    cluster: bool,
    mode: Mode,
    limits: Limits,
) -> Arc<dyn SessionStore> {
    RedisStore::connect(redis_settings(urls, cluster, mode, limits))
        .await
        .unwrap()
}

fn redis_settings(urls: Vec<String>, cluster: bool, mode: Mode, limits: Limits) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        sentinel_master: None,
        sentinel_master_password: None,
        ack_replicas: 0,
        ack_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        events_maxlen: limits.maxlen,
        retention: limits.retention,
        session_ttl: limits.session_ttl,
        pipelining: mode.pipelining,
        hash_state: mode.hash_state,
        quotas: limits.quotas(),
        subscribe: Default::default(),
    }
}

const OWNER: &str = "owner-fingerprint";

fn sid(name: &str) -> SessionId {
    name.parse().unwrap()
}

fn ev(kind: &str, n: usize) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        data: format!("{{\"n\":{n}}}"),
    }
}

fn batch(from: usize, to: usize) -> Vec<NewEvent> {
    (from..to).map(|n| ev("delta", n)).collect()
}

async fn create(store: &dyn SessionStore, id: &SessionId) {
    create_as(store, id, OWNER).await.unwrap();
}

async fn create_as(
    store: &dyn SessionStore,
    id: &SessionId,
    owner: &str,
) -> Result<(), StoreError> {
    store
        .create(
            id,
            NewSession {
                owner: owner.to_owned(),
                metadata: r#"{"user":"u1"}"#.to_owned(),
            },
        )
        .await
}

/// An event whose kind and data total `n` bytes (n >= 3): kind `k`, data a JSON string.
fn sized(n: usize) -> NewEvent {
    NewEvent {
        kind: "k".to_owned(),
        data: format!("\"{}\"", "x".repeat(n - 3)),
    }
}

/// A read where no event can have been trimmed: its events (and no gap).
async fn read(
    store: &dyn SessionStore,
    id: &SessionId,
    after: Option<EventId>,
    limit: usize,
) -> Vec<Event> {
    let replay = store.read(id, after, limit).await.unwrap();
    assert_eq!(replay.gap, None, "no event was trimmed, after {after:?}");
    replay.events
}

fn over_session_quota(result: Result<(), StoreError>) -> bool {
    matches!(result, Err(StoreError::SessionQuotaExceeded { limit: 3 }))
}

fn done() -> Completion {
    Completion {
        status: "succeeded".to_owned(),
        final_response: r#"{"text":"bye"}"#.to_owned(),
    }
}

/// Polls `check` until true, for at most 15 s (expiry is the server's business; the test
/// only waits for it to happen, it asserts no duration).
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..300 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn lifecycle(engine: Engine) {
    let store = &*engine.store;
    let id = sid("life");
    assert!(!store.exists(&id).await.unwrap());
    assert_eq!(store.state(&id).await.unwrap(), None);
    create(store, &id).await;
    assert!(store.exists(&id).await.unwrap());
    let state = store.state(&id).await.unwrap().unwrap();
    assert_eq!(state.status, "running");
    assert_eq!(state.owner, OWNER);
    assert_eq!(state.metadata, r#"{"user":"u1"}"#);
    assert_eq!(state.event_count, 0);
    assert!(!state.is_completed());

    let ids = store.append(&id, OWNER, &batch(0, 10)).await.unwrap();
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let complete_id = store.complete(&id, OWNER, done()).await.unwrap();
    assert!(complete_id > ids[9]);

    let state = store.state(&id).await.unwrap().unwrap();
    assert_eq!(state.status, "succeeded");
    assert!(state.completed_at.is_some());
    assert_eq!(state.final_response.as_deref(), Some(r#"{"text":"bye"}"#));
    assert_eq!(state.event_count, 11);

    let events = read(store, &id, None, 100).await;
    assert_eq!(events.len(), 11);
    assert_eq!(events[3].data, r#"{"n":3}"#);
    assert_eq!(events[10].kind, COMPLETE_KIND);
    assert_eq!(
        events[10].data,
        r#"{"status":"succeeded","final_response":{"text":"bye"}}"#
    );
}

async fn read_after_cursor_is_exact(engine: Engine) {
    let store = &*engine.store;
    let id = sid("cursor");
    create(store, &id).await;
    let mut ids = Vec::new();
    for chunk in 0..5 {
        ids.extend(
            store
                .append(&id, OWNER, &batch(chunk * 7, chunk * 7 + 7))
                .await
                .unwrap(),
        );
    }
    for k in [0, 1, 6, 7, 20, 34] {
        let rest = read(store, &id, Some(ids[k]), 1000).await;
        let got: Vec<EventId> = rest.iter().map(|e| e.id).collect();
        assert_eq!(got, ids[k + 1..], "after event {k}");
    }
    // Limits page through without gap or overlap.
    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let page = read(store, &id, cursor, 4).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        cursor = page.last().map(|e| e.id);
        paged.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(paged, ids);
    // A cursor from before the first event, or past the last, is fine.
    let before = EventId { ms: 0, seq: 0 };
    assert_eq!(read(store, &id, Some(before), 1000).await.len(), 35);
    let after = EventId {
        ms: u64::MAX,
        seq: 0,
    };
    assert!(read(store, &id, Some(after), 1000).await.is_empty());
}

async fn refused_writes_write_nothing(engine: Engine) {
    let store = &*engine.store;
    let id = sid("refused");
    let ghost = sid("ghost");
    assert!(matches!(
        store.append(&ghost, OWNER, &batch(0, 3)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.complete(&ghost, OWNER, done()).await,
        Err(StoreError::NotFound)
    ));
    assert!(!store.exists(&ghost).await.unwrap());
    assert!(read(store, &ghost, None, 10).await.is_empty());

    create(store, &id).await;
    store.append(&id, OWNER, &batch(0, 2)).await.unwrap();
    assert!(matches!(
        store.append(&id, "someone-else", &batch(2, 5)).await,
        Err(StoreError::Forbidden)
    ));
    assert!(matches!(
        store.complete(&id, "someone-else", done()).await,
        Err(StoreError::Forbidden)
    ));
    store.complete(&id, OWNER, done()).await.unwrap();
    assert!(matches!(
        store.complete(&id, OWNER, done()).await,
        Err(StoreError::Completed)
    ));
    assert!(matches!(
        store.append(&id, OWNER, &batch(5, 6)).await,
        Err(StoreError::Completed)
    ));
    let events = read(store, &id, None, 100).await;
    assert_eq!(events.len(), 3, "2 deltas + 1 complete: {events:?}");
    assert_eq!(store.state(&id).await.unwrap().unwrap().event_count, 3);
}

async fn log_is_capped(engine: Engine) {
    let store = &*engine.store;
    let id = sid("capped");
    create(store, &id).await;
    let mut ids = Vec::new();
    for chunk in 0..10 {
        ids.extend(
            store
                .append(&id, OWNER, &batch(chunk * 100, chunk * 100 + 100))
                .await
                .unwrap(),
        );
    }
    let Replay { gap, events: kept } = store.read(&id, None, 10_000).await.unwrap();
    // Approximate cap: at least the newest `maxlen` kept, and far fewer than appended.
    assert!(kept.len() >= 50 && kept.len() < 1000, "kept {}", kept.len());
    let kept_ids: Vec<EventId> = kept.iter().map(|e| e.id).collect();
    assert_eq!(
        kept_ids,
        ids[ids.len() - kept.len()..],
        "the newest are kept, in order"
    );
    // Reading from the start, the trimmed ones are reported, up to the newest of them.
    let newest_trimmed = ids[ids.len() - kept.len() - 1];
    assert_eq!(
        gap,
        Some(Gap {
            after: None,
            last: newest_trimmed
        })
    );
    assert_eq!(store.state(&id).await.unwrap().unwrap().event_count, 1000);
}

/// The ids of the events a read returned.
fn ids_of(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// A reader behind the trimming is told exactly which events it missed, whatever its cursor:
/// the issue's case (resume from the first event's id after the cap was passed), a cursor that
/// is exactly the newest trimmed event (nothing missed: no gap, although it is older than
/// everything kept), a reader that paged part of the log and then fell behind, and the
/// complete event.
async fn trimmed_reads_report_the_gap(engine: Engine) {
    let store = &*engine.store;
    let id = sid("gaps");
    create(store, &id).await;
    let mut ids = Vec::new();
    // Batches of several sizes, so entries start batches and follow entries of their own.
    for (from, to) in [(0, 1), (1, 40), (40, 41), (41, 300), (300, 301)] {
        ids.extend(store.append(&id, OWNER, &batch(from, to)).await.unwrap());
    }
    let kept = store.read(&id, None, 10_000).await.unwrap().events;
    let newest_trimmed = ids[ids.len() - kept.len() - 1];
    assert!(kept.len() < 300, "the log was trimmed: kept {}", kept.len());

    // Resumed from the first event: told, then the kept events, exactly.
    let first = store.read(&id, Some(ids[0]), 10_000).await.unwrap();
    assert_eq!(
        first.gap,
        Some(Gap {
            after: Some(ids[0]),
            last: newest_trimmed
        })
    );
    assert_eq!(ids_of(&first.events), ids_of(&kept));
    // A cursor from before any event (a stale or foreign id) is told too.
    let zero = EventId { ms: 0, seq: 0 };
    let stale = store.read(&id, Some(zero), 10).await.unwrap();
    assert_eq!(
        stale.gap.map(|g| (g.after, g.last)),
        Some((Some(zero), newest_trimmed))
    );
    // Resumed after the gap (what a client reconnecting after the gap event sends): nothing
    // more to tell, and the same events.
    let resumed = read(store, &id, Some(newest_trimmed), 10_000).await;
    assert_eq!(ids_of(&resumed), ids_of(&kept));
    // Inside what is kept: no gap; paging from the gap on misses nothing.
    let mut cursor = Some(newest_trimmed);
    let mut paged = Vec::new();
    loop {
        let page = read(store, &id, cursor, 7).await;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(ids_of(&page));
    }
    assert_eq!(paged, ids_of(&kept));

    // A reader that got part of the log falls behind: the next appends trim past its cursor.
    let reader = kept[2].id;
    let mut more = Vec::new();
    for chunk in 0..6 {
        more.extend(
            store
                .append(&id, OWNER, &batch(400 + chunk * 50, 450 + chunk * 50))
                .await
                .unwrap(),
        );
    }
    let done_id = store.complete(&id, OWNER, done()).await.unwrap();
    ids.extend(more);
    ids.push(done_id);
    let kept = store.read(&id, None, 10_000).await.unwrap().events;
    let newest_trimmed = ids[ids.len() - kept.len() - 1];
    assert!(newest_trimmed > reader, "the reader's cursor was trimmed");
    let behind = store.read(&id, Some(reader), 10_000).await.unwrap();
    assert_eq!(
        behind.gap,
        Some(Gap {
            after: Some(reader),
            last: newest_trimmed
        })
    );
    assert_eq!(ids_of(&behind.events), ids_of(&kept));
    assert_eq!(
        behind.events.last().map(|e| e.kind.as_str()),
        Some(COMPLETE_KIND)
    );
    // A cursor on the newest trimmed event has missed nothing, older than every kept one
    // though it is.
    assert!(newest_trimmed < kept[0].id);
    assert_eq!(
        ids_of(&read(store, &id, Some(newest_trimmed), 10_000).await),
        ids_of(&kept)
    );
}

async fn watch_wakes_a_waiting_reader(engine: Engine) {
    let store = Arc::clone(&engine.store);
    let id = sid("watched");
    create(&*store, &id).await;
    // Register, wait until the store hears of the session (Redis may be subscribing), read
    // (nothing yet), then wait: the append from another task must wake us.
    let mut watch = store.watch(&id);
    tokio::time::timeout(Duration::from_secs(10), watch.subscribed())
        .await
        .expect("the store subscribes to a watched session");
    assert!(read(&*store, &id, None, 10).await.is_empty());
    let writer = {
        let (store, id) = (Arc::clone(&store), id.clone());
        tokio::spawn(async move { store.append(&id, OWNER, &batch(0, 1)).await.unwrap() })
    };
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("an append after registration wakes the watch");
    let ids = writer.await.unwrap();
    let events = read(&*store, &id, None, 10).await;
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    // Completion wakes too (a second reader joins the subscription at once).
    let mut watch = store.watch(&id);
    watch.subscribed().await;
    store.complete(&id, OWNER, done()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("complete wakes the watch");
}

async fn completed_sessions_expire_after_retention(engine: Engine) {
    let store = &*engine.store;
    let id = sid("retained");
    create(store, &id).await;
    store.append(&id, OWNER, &batch(0, 3)).await.unwrap();
    store.complete(&id, OWNER, done()).await.unwrap();
    // Still replayable right after completion...
    assert_eq!(read(store, &id, None, 10).await.len(), 4);
    // ...and gone, state and events, once retention has passed.
    assert!(
        eventually(async || !store.exists(&id).await.unwrap()
            && read(store, &id, None, 10).await.is_empty())
        .await,
        "completed session never expired"
    );
}

async fn idle_sessions_expire(engine: Engine) {
    let store = &*engine.store;
    let id = sid("idle");
    create(store, &id).await;
    assert!(store.exists(&id).await.unwrap());
    assert!(
        eventually(async || !store.exists(&id).await.unwrap()).await,
        "idle session never expired"
    );
    assert!(matches!(
        store.append(&id, OWNER, &batch(0, 1)).await,
        Err(StoreError::NotFound)
    ));
}

/// The next change the feed reports about a session (skipping "may have missed changes",
/// which a Redis notifier says whenever it (re)subscribes).
async fn next_change(feed: &mut agentgate::store::presence::PresenceReceiver) -> SessionId {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(15), feed.next()).await;
        match next.expect("no presence change within 15 s") {
            Some(Presence::Changed(id)) => return id,
            Some(Presence::Unknown) => continue,
            None => panic!("presence feed closed"),
        }
    }
}

async fn presence_reports_creates_and_expiries(engine: Engine) {
    let store = &*engine.store;
    let mut feed = store.presence().subscribe();
    let id = sid("present");
    create(store, &id).await;
    assert_eq!(next_change(&mut feed).await, id);
    if engine.expiry_events {
        // SHORT_TTL: the idle session expires and the feed says so.
        assert_eq!(next_change(&mut feed).await, id);
        assert!(!store.exists(&id).await.unwrap());
    }
}

async fn running_sessions_are_capped_per_key(engine: Engine) {
    let store = &*engine.store;
    let ids: Vec<SessionId> = (0..3).map(|i| sid(&format!("quota{i}"))).collect();
    for id in &ids {
        create(store, id).await;
    }
    let extra = sid("quota-extra");
    assert!(over_session_quota(create_as(store, &extra, OWNER).await));
    assert!(
        !store.exists(&extra).await.unwrap(),
        "a refused init writes nothing"
    );
    // Another key has its own quota.
    create_as(store, &sid("other-key"), "another-owner")
        .await
        .unwrap();
    // Writing to a session takes no slot; refused completions free none.
    store.append(&ids[0], OWNER, &batch(0, 2)).await.unwrap();
    assert!(matches!(
        store.complete(&ids[1], "another-owner", done()).await,
        Err(StoreError::Forbidden)
    ));
    assert!(over_session_quota(create_as(store, &extra, OWNER).await));
    // Completing frees exactly one slot.
    store.complete(&ids[0], OWNER, done()).await.unwrap();
    assert!(matches!(
        store.complete(&ids[0], OWNER, done()).await,
        Err(StoreError::Completed)
    ));
    create(store, &extra).await;
    assert!(over_session_quota(
        create_as(store, &sid("quota-more"), OWNER).await
    ));
    assert!(!store.exists(&sid("quota-more")).await.unwrap());
}

/// QUOTA_TTL: 2 sessions per key, 1 s TTL. A session that expires frees its slot; one kept
/// alive by appends past its first deadline stays counted.
async fn expiry_frees_a_slot_and_writes_keep_one(engine: Engine) {
    let store = &*engine.store;
    let (kept, idle) = (sid("kept"), sid("idle"));
    create(store, &kept).await;
    create(store, &idle).await;
    let refused = create_as(store, &sid("early"), OWNER).await;
    assert!(
        matches!(refused, Err(StoreError::SessionQuotaExceeded { limit: 2 })),
        "{refused:?}"
    );
    // `kept` was created first, so once `idle` has expired, `kept`'s first deadline has
    // passed too: only its appends keep it counted.
    let mut n = 0;
    while store.exists(&idle).await.unwrap() {
        store.append(&kept, OWNER, &batch(n, n + 1)).await.unwrap();
        n += 1;
        assert!(n < 300, "idle session never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.append(&kept, OWNER, &batch(n, n + 1)).await.unwrap();
    create(store, &sid("after-expiry")).await;
    let refused = create_as(store, &sid("one-too-many"), OWNER).await;
    assert!(
        matches!(refused, Err(StoreError::SessionQuotaExceeded { limit: 2 })),
        "the appended session still counts: {refused:?}"
    );
}

/// QUOTAS: 100 bytes per session.
async fn session_bytes_are_capped(engine: Engine) {
    let store = &*engine.store;
    let id = sid("bytes");
    create(store, &id).await;
    store
        .append(&id, OWNER, &[sized(40), sized(40)])
        .await
        .unwrap();
    // A batch that would pass the cap is refused whole, though its first event fits.
    assert!(matches!(
        store.append(&id, OWNER, &[sized(10), sized(11)]).await,
        Err(StoreError::SessionBytesExceeded { limit: 100 })
    ));
    assert_eq!(read(store, &id, None, 100).await.len(), 2);
    assert_eq!(store.state(&id).await.unwrap().unwrap().event_count, 2);
    // Up to the cap exactly is fine; one byte more is not.
    store.append(&id, OWNER, &[sized(20)]).await.unwrap();
    assert!(matches!(
        store.append(&id, OWNER, &[sized(3)]).await,
        Err(StoreError::SessionBytesExceeded { limit: 100 })
    ));
    // Another session has its own budget.
    let other = sid("bytes-other");
    create(store, &other).await;
    store.append(&other, OWNER, &[sized(100)]).await.unwrap();
    // A session at its cap can still complete.
    store.complete(&id, OWNER, done()).await.unwrap();
    let events = read(store, &id, None, 100).await;
    assert_eq!(events.len(), 4, "3 appended + complete: {events:?}");
    assert_eq!(events[3].kind, COMPLETE_KIND);
    assert_eq!(store.state(&id).await.unwrap().unwrap().event_count, 4);
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new(name.as_bytes()).unwrap()
}

/// Appends `events` as [`OWNER`] with the idempotency key `name`.
async fn append_keyed(
    store: &dyn SessionStore,
    id: &SessionId,
    events: &[NewEvent],
    name: &str,
) -> Result<Applied<Vec<EventId>>, StoreError> {
    store
        .append_idempotent(id, OWNER, events, Some(&key(name)))
        .await
}

fn replayed<T>(value: T) -> Applied<T> {
    Applied {
        value,
        replayed: true,
    }
}

/// A retried append or complete with the same key writes nothing and returns the first
/// result, even after the session completed; the same key for another request is refused.
async fn idempotent_writes_apply_once(engine: Engine) {
    let store = &*engine.store;
    let id = sid("idem");
    create(store, &id).await;
    let first = append_keyed(store, &id, &batch(0, 3), "k1").await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.value.len(), 3);
    let retry = append_keyed(store, &id, &batch(0, 3), "k1").await.unwrap();
    assert_eq!(retry, replayed(first.value.clone()), "the retry replays");
    // The same key for other events, or for complete, is refused and writes nothing.
    assert!(matches!(
        append_keyed(store, &id, &batch(0, 4), "k1").await,
        Err(StoreError::IdempotencyKeyReused)
    ));
    assert!(matches!(
        store
            .complete_idempotent(&id, OWNER, done(), Some(&key("k1")))
            .await,
        Err(StoreError::IdempotencyKeyReused)
    ));
    // Another owner is refused before any key is looked at.
    assert!(matches!(
        store
            .append_idempotent(&id, "someone-else", &batch(0, 3), Some(&key("k1")))
            .await,
        Err(StoreError::Forbidden)
    ));
    // Another key, or no key, writes the same events again.
    let second = append_keyed(store, &id, &batch(0, 3), "k2").await.unwrap();
    assert!(!second.replayed && second.value[0] > first.value[2]);
    store.append(&id, OWNER, &batch(0, 3)).await.unwrap();
    // A key is the session's own: on another session it is a new key.
    let other = sid("idem-other");
    create(store, &other).await;
    let elsewhere = append_keyed(store, &other, &batch(0, 3), "k1")
        .await
        .unwrap();
    assert!(!elsewhere.replayed);

    // Complete: once; its retry gets the same event id, a plain second complete a refusal.
    let completed = store
        .complete_idempotent(&id, OWNER, done(), Some(&key("k3")))
        .await
        .unwrap();
    assert!(!completed.replayed);
    assert_eq!(
        store
            .complete_idempotent(&id, OWNER, done(), Some(&key("k3")))
            .await
            .unwrap(),
        replayed(completed.value)
    );
    assert!(matches!(
        store.complete(&id, OWNER, done()).await,
        Err(StoreError::Completed)
    ));
    let failed = Completion {
        status: "failed".to_owned(),
        ..done()
    };
    assert!(matches!(
        store
            .complete_idempotent(&id, OWNER, failed, Some(&key("k3")))
            .await,
        Err(StoreError::IdempotencyKeyReused)
    ));
    // After completion an append's retry still gets its original ids; a new key cannot
    // append.
    assert_eq!(
        append_keyed(store, &id, &batch(0, 3), "k1").await.unwrap(),
        replayed(first.value.clone())
    );
    assert!(matches!(
        append_keyed(store, &id, &batch(0, 3), "k4").await,
        Err(StoreError::Completed)
    ));

    let events = read(store, &id, None, 100).await;
    assert_eq!(events.len(), 10, "3 + 3 + 3 + complete: {events:?}");
    assert_eq!(
        events[..3].iter().map(|e| e.id).collect::<Vec<_>>(),
        first.value
    );
    assert_eq!(events[9].id, completed.value);
    let state = store.state(&id).await.unwrap().unwrap();
    assert_eq!(state.event_count, 10);
    assert_eq!(state.status, "succeeded");
}

/// Only successes are recorded: a refused call wrote nothing, and its retry is evaluated
/// afresh.
async fn refused_idempotent_writes_record_nothing(engine: Engine) {
    let store = &*engine.store;
    let id = sid("idem-refused");
    assert!(matches!(
        append_keyed(store, &id, &batch(0, 2), "k").await,
        Err(StoreError::NotFound)
    ));
    create(store, &id).await;
    // QUOTAS: 100 bytes per session.
    assert!(matches!(
        append_keyed(store, &id, &[sized(101)], "big").await,
        Err(StoreError::SessionBytesExceeded { limit: 100 })
    ));
    let ids = append_keyed(store, &id, &batch(0, 2), "k").await.unwrap();
    assert!(!ids.replayed, "the refusal recorded nothing");
    // The same key now holds the successful call; the refused body is another request.
    assert!(matches!(
        append_keyed(store, &id, &[sized(101)], "k").await,
        Err(StoreError::IdempotencyKeyReused)
    ));
    assert_eq!(read(store, &id, None, 100).await.len(), 2);
}

/// A session remembers its newest `MAX_KEYS_PER_SESSION` keys: one more evicts the oldest,
/// whose retry then writes again.
async fn idempotency_keys_are_bounded_per_session(engine: Engine) {
    let store = &*engine.store;
    let id = sid("idem-bound");
    create(store, &id).await;
    let mut firsts = Vec::new();
    for n in 0..=MAX_KEYS_PER_SESSION {
        let applied = append_keyed(store, &id, &batch(n, n + 1), &format!("k{n}"))
            .await
            .unwrap();
        assert!(!applied.replayed);
        firsts.push(applied.value);
    }
    // The newest MAX_KEYS_PER_SESSION are remembered...
    for n in [1, MAX_KEYS_PER_SESSION] {
        let retry = append_keyed(store, &id, &batch(n, n + 1), &format!("k{n}"))
            .await
            .unwrap();
        assert_eq!(retry, replayed(firsts[n].clone()), "key {n}");
    }
    // ...the oldest was forgotten: its retry is a new append.
    let again = append_keyed(store, &id, &batch(0, 1), "k0").await.unwrap();
    assert!(!again.replayed && again.value != firsts[0]);
    let count = MAX_KEYS_PER_SESSION as u64 + 2;
    assert_eq!(store.state(&id).await.unwrap().unwrap().event_count, count);
}

/// Runs `call` 8 times at once; asserts exactly one of them wrote and all answered alike;
/// returns the answer.
async fn race<T, F>(
    store: &Arc<dyn SessionStore>,
    id: &SessionId,
    call: impl Fn(Arc<dyn SessionStore>, SessionId) -> F,
) -> T
where
    T: std::fmt::Debug + PartialEq + Send + 'static,
    F: Future<Output = Applied<T>> + Send + 'static,
{
    let tries: Vec<_> = (0..8)
        .map(|_| tokio::spawn(call(Arc::clone(store), id.clone())))
        .collect();
    let mut answers = Vec::new();
    for t in tries {
        answers.push(t.await.unwrap());
    }
    let wrote = answers.iter().filter(|a| !a.replayed).count();
    assert_eq!(wrote, 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.value == answers[0].value));
    answers.swap_remove(0).value
}

/// Retries racing the call they repeat: exactly one of them writes, every one answers the
/// same ids. (Atomic engines only: the naive baseline checks and writes in separate round
/// trips.)
async fn racing_retries_write_once(engine: Engine) {
    let store = Arc::clone(&engine.store);
    let id = sid("idem-race");
    create(&*store, &id).await;
    let answers = race(&store, &id, async |store, id| {
        append_keyed(&*store, &id, &batch(0, 5), "race")
            .await
            .unwrap()
    })
    .await;
    let events = read(&*store, &id, None, 100).await;
    assert_eq!(ids_of(&events), answers);
    race(&store, &id, async |store, id| {
        store
            .complete_idempotent(&id, OWNER, done(), Some(&key("end")))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(read(&*store, &id, None, 100).await.len(), 6);
}

const QUOTAS: Limits = Limits {
    max_sessions: 3,
    max_bytes: 100,
    ..DEFAULT
};
const QUOTA_TTL: Limits = Limits {
    max_sessions: 2,
    session_ttl: Duration::from_secs(1),
    ..DEFAULT
};
const CAPPED: Limits = Limits {
    maxlen: 50,
    ..DEFAULT
};
const SHORT_RETENTION: Limits = Limits {
    retention: Duration::from_millis(300),
    ..DEFAULT
};
const SHORT_TTL: Limits = Limits {
    session_ttl: Duration::from_millis(300),
    ..DEFAULT
};

macro_rules! conformance {
    ($($case:ident: $limits:expr;)*) => {
        mod memory_engine {
            use super::*;
            $(#[tokio::test] async fn $case() { super::$case(memory($limits)).await; })*
        }
        mod redis_engine {
            use super::*;
            $(#[tokio::test] async fn $case() { super::$case(redis($limits).await).await; })*
        }
        mod redis_cluster_engine {
            use super::*;
            $(#[tokio::test] async fn $case() { super::$case(redis_cluster($limits).await).await; })*
        }
        /// Sentinel, every write acknowledged by a replica.
        mod redis_sentinel_engine {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(redis_sentinel($limits).await).await; })*
        }
        /// `pipelining = false`: one command per round trip, HASH state.
        mod redis_sequential_engine {
            use super::*;
            const MODE: Mode = Mode { pipelining: false, hash_state: true };
            $(#[tokio::test] async fn $case() { super::$case(redis_in(MODE, $limits).await).await; })*
        }
        /// `hash_state = false`: JSON-string state, written by Lua scripts.
        mod redis_json_state_engine {
            use super::*;
            const MODE: Mode = Mode { pipelining: true, hash_state: false };
            $(#[tokio::test] async fn $case() { super::$case(redis_in(MODE, $limits).await).await; })*
        }
        /// Both off: the benchmark's naive baseline.
        mod redis_naive_engine {
            use super::*;
            const MODE: Mode = Mode { pipelining: false, hash_state: false };
            $(#[tokio::test] async fn $case() { super::$case(redis_in(MODE, $limits).await).await; })*
        }
    };
}

conformance! {
    lifecycle: DEFAULT;
    read_after_cursor_is_exact: DEFAULT;
    refused_writes_write_nothing: DEFAULT;
    log_is_capped: CAPPED;
    trimmed_reads_report_the_gap: CAPPED;
    watch_wakes_a_waiting_reader: DEFAULT;
    completed_sessions_expire_after_retention: SHORT_RETENTION;
    idle_sessions_expire: SHORT_TTL;
    presence_reports_creates_and_expiries: SHORT_TTL;
    running_sessions_are_capped_per_key: QUOTAS;
    expiry_frees_a_slot_and_writes_keep_one: QUOTA_TTL;
    session_bytes_are_capped: QUOTAS;
    idempotent_writes_apply_once: DEFAULT;
    refused_idempotent_writes_record_nothing: QUOTAS;
    idempotency_keys_are_bounded_per_session: DEFAULT;
}

/// The engines whose writes are atomic (every one but the naive baseline).
mod atomic {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_racing_retries_write_once() {
        racing_retries_write_once(memory(DEFAULT)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_racing_retries_write_once() {
        racing_retries_write_once(redis(DEFAULT).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_racing_retries_write_once() {
        racing_retries_write_once(redis_cluster(DEFAULT).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_sentinel_racing_retries_write_once() {
        racing_retries_write_once(redis_sentinel(DEFAULT).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_json_state_racing_retries_write_once() {
        let mode = Mode {
            pipelining: true,
            hash_state: false,
        };
        racing_retries_write_once(redis_in(mode, DEFAULT).await).await;
    }
}

//! The names of the Redis keys and channels a session uses (the data model is in the parent
//! module's docs), and the way back from a name to its session.
//!
//! Every session key carries the `{<sid>}` hash tag, so a session lives in one Cluster slot;
//! the owner's quota set is tagged by the owner instead (another slot). Names are built only
//! from validated session ids and key fingerprints, never from a credential.

use crate::store::SessionId;

/// Pattern matching every session's notification channel.
pub(super) const NOTIFY_PATTERN: &str = "ag:*:notify";
/// Keyspace events of expired keys, in every database (sent only if the server's
/// `notify-keyspace-events` has `Ex`): a session's meta hash expiring ends the session.
pub(super) const EXPIRED_PATTERN: &str = "__keyevent@*__:expired";

/// The session's state: a HASH (or, `hash_state = false`, one JSON string).
pub(super) fn meta_key(id: &SessionId) -> String {
    format!("ag:{{{id}}}:meta")
}

/// The session's event log: a STREAM.
pub(super) fn events_key(id: &SessionId) -> String {
    format!("ag:{{{id}}}:events")
}

/// The session's idempotency records: a HASH of key name (a hash of the key) to request
/// digest and result ([`crate::store::idempotency`]).
pub(super) fn idem_key(id: &SessionId) -> String {
    format!("ag:{{{id}}}:idem")
}

/// The names in [`idem_key`], oldest first: a LIST, for evicting the oldest.
pub(super) fn idem_order_key(id: &SessionId) -> String {
    format!("ag:{{{id}}}:idem:order")
}

/// The pub/sub channel every write to the session publishes its notice on.
pub(super) fn notify_channel(id: &SessionId) -> String {
    format!("ag:{{{id}}}:notify")
}

/// The owner's quota set. `owner` is the API key's fingerprint, never the key.
pub(super) fn owner_key(owner: &str) -> String {
    format!("ag:owner:{{{owner}}}:sessions")
}

/// The session whose meta hash `key` is (`ag:{<sid>}:meta`).
pub(super) fn session_of_meta_key(key: &[u8]) -> Option<SessionId> {
    let s = std::str::from_utf8(key).ok()?;
    s.strip_prefix("ag:{")?.strip_suffix("}:meta")?.parse().ok()
}

/// The session id inside a notification channel name, if it is one of ours.
pub(super) fn session_of_channel(channel: &[u8]) -> Option<SessionId> {
    let s = std::str::from_utf8(channel).ok()?;
    s.strip_prefix("ag:{")?
        .strip_suffix("}:notify")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_session_hash_tag() {
        let id: SessionId = "abc".parse().unwrap();
        assert_eq!(meta_key(&id), "ag:{abc}:meta");
        assert_eq!(events_key(&id), "ag:{abc}:events");
        assert_eq!(idem_key(&id), "ag:{abc}:idem");
        assert_eq!(idem_order_key(&id), "ag:{abc}:idem:order");
        assert_eq!(
            session_of_meta_key(meta_key(&id).as_bytes()),
            Some(id.clone())
        );
        assert_eq!(session_of_channel(notify_channel(&id).as_bytes()), Some(id));
        assert_eq!(session_of_channel(b"ag:{a b}:notify"), None);
        assert_eq!(session_of_channel(b"other"), None);
    }

    #[test]
    fn the_quota_set_is_tagged_by_owner_and_is_no_session_key() {
        let owners = owner_key("0123456789abcdef");
        assert_eq!(owners, "ag:owner:{0123456789abcdef}:sessions");
        assert_eq!(session_of_meta_key(owners.as_bytes()), None);
        assert_eq!(session_of_channel(owners.as_bytes()), None);
    }
}

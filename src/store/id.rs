//! Validated identifiers: session ids (safe to put in a Redis key) and event ids.

use std::fmt;
use std::str::FromStr;

/// Longest accepted session id.
pub const MAX_SESSION_ID_LEN: usize = 64;

/// A session id: 1 to 64 characters of `[A-Za-z0-9_-]`.
///
/// Validated before any key is built from it, so it can never carry a Redis hash-tag brace,
/// a key separator or a glob character into a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(&'static str);

impl SessionId {
    /// A fresh random id (UUID v4, 32 hex digits).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidId("must not be empty"));
        }
        if s.len() > MAX_SESSION_ID_LEN {
            return Err(InvalidId("must be at most 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidId("may contain only A-Z, a-z, 0-9, '-' and '_'"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's position in its session's log, in Redis Stream id form `<ms>-<seq>`.
///
/// Ordered numerically, so resuming "after id X" is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl EventId {
    /// The id that follows `self` for an append at wall-clock `now_ms` (Redis's rule: time
    /// if it moved forward, otherwise the same millisecond with the next sequence).
    pub fn next_after(last: Option<EventId>, now_ms: u64) -> EventId {
        match last {
            Some(last) if last.ms >= now_ms => EventId {
                ms: last.ms,
                seq: last.seq + 1,
            },
            _ => EventId { ms: now_ms, seq: 0 },
        }
    }
}

impl FromStr for EventId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const MSG: &str = "must look like <milliseconds>-<sequence>, e.g. 1700000000000-0";
        let (ms, seq) = s.split_once('-').ok_or(InvalidId(MSG))?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(InvalidId(MSG));
        }
        Ok(EventId {
            ms: ms.parse().map_err(|_| InvalidId(MSG))?,
            seq: seq.parse().map_err(|_| InvalidId(MSG))?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_validated() {
        assert!("abc-DEF_123".parse::<SessionId>().is_ok());
        assert!(SessionId::generate().as_str().parse::<SessionId>().is_ok());
        for bad in ["", "a b", "a{b}", "a:b", "a*", "é", &"x".repeat(65)] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn event_ids_parse_order_and_advance() {
        let a: EventId = "5-1".parse().unwrap();
        let b: EventId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "5-1");
        for bad in [
            "",
            "5",
            "5-",
            "-1",
            "a-1",
            "1-1-1",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(EventId::next_after(None, 7), EventId { ms: 7, seq: 0 });
        assert_eq!(EventId::next_after(Some(b), 7), EventId { ms: 10, seq: 1 });
        assert_eq!(EventId::next_after(Some(b), 11), EventId { ms: 11, seq: 0 });
    }
}

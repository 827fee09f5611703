//! `features.hash_state = false`: a session's state as ONE JSON string at `ag:{<sid>}:meta`
//! instead of a HASH: the naive layout the benchmark compares against.
//!
//! Every change reads the whole object, modifies it and writes it back whole (`GET`, then
//! `SET`); with `features.pipelining` that read-modify-write happens inside a Lua script
//! (`lua/json_*.lua`: atomic, one round trip), without it as separate awaited commands (see
//! `sequential`).
//! `metadata` and `final_response` are kept as JSON *text* inside the object, so what
//! the caller stored comes back byte for byte (Lua's cjson would turn `[]` into `{}`).

use serde::{Deserialize, Serialize};

use crate::store::{RUNNING, SessionState, StoreError};

/// The stored object. Field names match the HASH fields of the default layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct JsonState {
    pub status: String,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
    pub owner: String,
    pub metadata: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_response: Option<String>,
    pub event_count: u64,
    /// Bytes appended over the session's life, for the byte quota (absent before it).
    #[serde(default)]
    pub bytes: u64,
}

impl JsonState {
    /// The state of a session just created.
    pub fn created(owner: &str, metadata: String, now: u64) -> Self {
        Self {
            status: RUNNING.to_owned(),
            created_at: now,
            updated_at: now,
            completed_at: None,
            owner: owner.to_owned(),
            metadata,
            final_response: None,
            event_count: 0,
            bytes: 0,
        }
    }

    /// Parses what `GET` returned.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        serde_json::from_str(raw)
            .map_err(|e| StoreError::Protocol(format!("session state is not valid JSON: {e}")))
    }

    /// The text `SET` stores.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// As the API reports it.
    pub fn into_state(self) -> SessionState {
        SessionState {
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
            owner: self.owner,
            metadata: self.metadata,
            final_response: self.final_response,
            event_count: self.event_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_tolerates_lua_output() {
        let state = JsonState {
            status: "running".to_owned(),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_000_001,
            completed_at: None,
            owner: "o".to_owned(),
            metadata: r#"{"a":[]}"#.to_owned(),
            final_response: None,
            event_count: 0,
            bytes: 12,
        };
        assert_eq!(JsonState::parse(&state.to_json()).ok(), Some(state));
        // What cjson writes back: other key order, escaped slashes.
        let lua = r#"{"event_count":3,"owner":"o\/x","metadata":"null","status":"succeeded","created_at":1795000000000,"updated_at":1795000000002,"completed_at":1795000000002,"final_response":"{}"}"#;
        let parsed = JsonState::parse(lua).map(JsonState::into_state).ok();
        let parsed = parsed.as_ref();
        assert_eq!(parsed.map(|s| s.owner.as_str()), Some("o/x"));
        assert_eq!(parsed.and_then(|s| s.completed_at), Some(1_795_000_000_002));
        assert!(JsonState::parse("not json").is_err());
    }
}

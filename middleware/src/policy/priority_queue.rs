//! [`PriorityQueuePolicy`]: the layer's settings, as TOML-friendly data.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PolicyError, Problem, at_least_one};

/// The highest priority a policy gives (`0..=9`); a trusted `x-priority` above it counts
/// as this.
pub const MAX_PRIORITY: u8 = 9;

/// Which requests draw from the stream budget
/// ([`stream_budget`](PriorityQueuePolicy::stream_budget)).
///
/// Written as a plain string in TOML: `streams = "path"`, `"all"`, `"none"` or `"accept"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamRule {
    /// `GET` requests whose path ends in `/stream`: the server's URL space decides, not
    /// the client.
    #[default]
    Path,
    /// Every request (a route that serves only streams).
    All,
    /// No request: streams share `max_in_flight`.
    None,
    /// Requests whose `Accept` names `text/event-stream`, or whose path ends in `/stream`.
    /// Pitfall: the client chooses its `Accept`, so any request can move itself into the
    /// stream budget; use it only where the URL space cannot tell.
    Accept,
}

/// Settings of a `PriorityQueueLayer` (`priority_queue`).
///
/// ```toml
/// max_in_flight = 64     # requests running at once (bodies still streaming count)
/// max_queue = 256        # requests waiting for a slot, per budget
/// max_wait_ms = 5000     # longest a request waits before it gets 503
/// default_priority = 1   # the route's priority (0..=9, higher first)
/// trusted_proxies = []   # peers whose x-priority is believed; from anyone else it is removed
/// api_key_priorities = { "0123456789abcdef" = 7 }   # per authenticated client
/// stream_budget = 0      # separate slots for streams; 0 = streams share max_in_flight
/// streams = "path"       # which requests are streams: path | all | none | accept
/// ```
///
/// A request's priority, first that applies: the `x-priority` header **if the peer is one of
/// `trusted_proxies`** (a number, clamped to `0..=9`); the priority of the authenticated
/// client in `api_key_priorities`; `default_priority`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityQueuePolicy {
    /// Most requests running at once. A request runs from the call of the inner service
    /// until its response body ends or is dropped. Must be at least 1. Default 64.
    pub max_in_flight: usize,
    /// Most requests waiting for a slot, per budget (main and, if any, streams); beyond it
    /// the lowest-priority waiter (or the newcomer) gets `503`. 0 never queues. Default 256.
    pub max_queue: usize,
    /// Longest a request waits for a slot, in milliseconds, before it gets `503`.
    /// Default 5000.
    pub max_wait_ms: u64,
    /// Priority of requests nothing else places (the route's priority), `0..=9`, higher
    /// runs first. Default 1.
    pub default_priority: u8,
    /// Peers (your own proxies, by connection address) whose `x-priority` header is
    /// believed, clamped to `0..=9`. From every other client the header is ignored and
    /// removed from the request before it goes on (to the upstream). Default none: no client
    /// sets its own priority.
    pub trusted_proxies: Vec<IpAddr>,
    /// Priority (`0..=9`) per authenticated client, keyed by its
    /// `ClientIdentity` (`client::ClientIdentity`, inserted by an authenticating layer).
    /// Default none.
    pub api_key_priorities: BTreeMap<String, u8>,
    /// Slots for streaming requests (SSE), taken instead of `max_in_flight`, so long-lived
    /// streams cannot starve short requests. 0 means streams share `max_in_flight`.
    /// Default 0.
    pub stream_budget: usize,
    /// Which requests are streams (see [`StreamRule`]). Default unset: [`StreamRule::Path`]
    /// (an application may pick its own default per route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamRule>,
}

impl Default for PriorityQueuePolicy {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            max_queue: 256,
            max_wait_ms: 5_000,
            default_priority: 1,
            trusted_proxies: Vec::new(),
            api_key_priorities: BTreeMap::new(),
            stream_budget: 0,
            streams: None,
        }
    }
}

impl PriorityQueuePolicy {
    /// [`max_wait_ms`](Self::max_wait_ms) as a [`Duration`].
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// Checks the settings: `max_in_flight` must be at least 1, every priority at most 9.
    pub fn validate(&self) -> Result<(), PolicyError> {
        at_least_one("max_in_flight", self.max_in_flight as u64)?;
        // The clients are not named: a misplaced API key must not end up in an error message.
        let priorities = std::iter::once(("default_priority", self.default_priority)).chain(
            self.api_key_priorities
                .values()
                .map(|p| ("api_key_priorities", *p)),
        );
        for (key, priority) in priorities {
            if priority > MAX_PRIORITY {
                let (value, max) = (u64::from(priority), u64::from(MAX_PRIORITY));
                return Err(PolicyError::new(key, Problem::AboveMax { value, max }));
            }
        }
        Ok(())
    }
}

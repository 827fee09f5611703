use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who produces a session's events once it is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// `"demo"`: on init the gateway itself plays a scripted agent run ([`DemoConfig`]);
    /// useful to try the API and front ends without an agent.
    Demo,
    /// `"none"`: external agents drive sessions through the API.
    #[default]
    None,
}

/// `[agent]`: how sessions are driven.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// `"demo"` or `"none"`. Default `"none"`.
    pub dispatch: Dispatch,
    /// `[agent.demo]`: the scripted run, used only when `dispatch = "demo"`.
    pub demo: DemoConfig,
}

/// `[agent.demo]`: the scripted run played by the built-in demo agent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Pause between scripted events, in milliseconds. At most 60_000. Default 150.
    pub pace_ms: u64,
    /// Number of text-delta events in the scripted answer. At least 1 when
    /// `dispatch = "demo"`. Default 12.
    pub deltas: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            pace_ms: 150,
            deltas: 12,
        }
    }
}

impl DemoConfig {
    /// [`pace_ms`](Self::pace_ms) as a [`Duration`].
    pub fn pace(&self) -> Duration {
        Duration::from_millis(self.pace_ms)
    }
}

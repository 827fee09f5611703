//! `[agent]`: the demo agent's pacing.

use super::Problems;
use crate::schema::{Config, Dispatch};

impl Config {
    pub(super) fn check_agent(&self, p: &mut Problems) {
        let a = &self.agent;
        if a.dispatch == Dispatch::Demo {
            p.require(
                a.demo.deltas >= 1,
                "agent.demo.deltas",
                "must be at least 1 when agent.dispatch = \"demo\"",
            );
        }
        p.require(
            a.demo.pace_ms <= 60_000,
            "agent.demo.pace_ms",
            "must be at most 60000 (one minute)",
        );
    }
}

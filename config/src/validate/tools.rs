//! `[tools]` and `[tools.NAME]`: execution limits and each declared tool.

use super::{MAX_THREADS, Problems};
use crate::locate::{is_bare_key, key_name};
use crate::schema::{Config, ToolKind};

/// Longest tool name, in characters.
const MAX_TOOL_NAME_LEN: usize = 64;

impl Config {
    pub(super) fn check_tools(&self, p: &mut Problems) {
        let t = &self.tools;
        p.require(
            (1..=1024).contains(&t.max_parallel),
            "tools.max_parallel",
            "must be between 1 and 1024",
        );
        p.require(
            (1..=3_600_000).contains(&t.timeout_ms),
            "tools.timeout_ms",
            "must be between 1 and 3600000 (one hour)",
        );
        p.require(
            t.workers <= MAX_THREADS,
            "tools.workers",
            format!("must be at most {MAX_THREADS} (0 = one per CPU core)"),
        );
        p.require(
            t.queue_capacity >= 1,
            "tools.queue_capacity",
            "must be at least 1",
        );
        p.require(
            (1..=1000).contains(&t.max_calls),
            "tools.max_calls",
            "must be between 1 and 1000",
        );
        p.require(
            t.max_input_bytes >= 1,
            "tools.max_input_bytes",
            "must be at least 1",
        );
        p.require(
            t.max_batch_bytes >= t.max_input_bytes.max(1),
            "tools.max_batch_bytes",
            format!(
                "must be at least tools.max_input_bytes ({}), or a single call's input could not fit",
                t.max_input_bytes
            ),
        );
        p.require(
            t.max_output_bytes >= 1,
            "tools.max_output_bytes",
            "must be at least 1",
        );
        for (name, tool) in &t.tools {
            let table = format!("tools.{}", key_name(name));
            let key = |field: &str| format!("{table}.{field}");
            p.require(
                is_bare_key(name) && name.len() <= MAX_TOOL_NAME_LEN,
                &table,
                "the name must be 1 to 64 ASCII letters, digits, '_' and '-'",
            );
            if tool.timeout_ms == Some(0) {
                p.push(&key("timeout_ms"), "must be at least 1");
            }
            if tool.kind != ToolKind::Http {
                for (field, set) in [
                    ("upstream", tool.upstream.is_some()),
                    ("path", tool.path.is_some()),
                ] {
                    p.require(
                        !set,
                        &key(field),
                        format!(
                            "only applies to kind = \"http\" (this tool is {:?})",
                            tool.kind.as_str()
                        ),
                    );
                }
                continue;
            }
            match &tool.upstream {
                None => p.push(
                    &key("upstream"),
                    "is required when kind = \"http\": name an [upstreams.NAME] table",
                ),
                Some(upstream) if !self.upstreams.contains_key(upstream) => p.push(
                    &key("upstream"),
                    format!("no [upstreams.{}] table is defined", key_name(upstream)),
                ),
                Some(_) => {}
            }
            if let Some(path) = &tool.path {
                p.require(
                    path.starts_with('/') && path.chars().all(|c| c.is_ascii_graphic()),
                    &key("path"),
                    "must start with '/' and contain only visible ASCII characters",
                );
            }
        }
    }
}

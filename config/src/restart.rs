//! The keys a reload (SIGHUP) cannot change while the process runs: listeners, threads and
//! buffers (`server`), the session store (`store`, and the two `features` flags that shape
//! how it talks to Redis), the span exporter (`telemetry`), the tool worker pool
//! (`tools.workers`, `tools.queue_capacity`). This is the one list of them: a reload keeps
//! their running values ([`Config::keep_restart_only`]) and names each changed one.

use serde_json::Value;

use crate::Config;

/// Copies one restart-only key's running value into the new configuration.
type KeepRunning = fn(&mut Config, &Config);

/// Each restart-only key (dotted, as in the file) with how its running value is kept.
const KEYS: [(&str, KeepRunning); 7] = [
    ("server", |new, running| new.server = running.server.clone()),
    ("store", |new, running| new.store = running.store.clone()),
    ("telemetry", |new, running| {
        new.telemetry = running.telemetry.clone();
    }),
    ("features.pipelining", |new, running| {
        new.features.pipelining = running.features.pipelining;
    }),
    ("features.hash_state", |new, running| {
        new.features.hash_state = running.features.hash_state;
    }),
    ("tools.workers", |new, running| {
        new.tools.workers = running.tools.workers;
    }),
    ("tools.queue_capacity", |new, running| {
        new.tools.queue_capacity = running.tools.queue_capacity;
    }),
];

/// The restart-only keys, dotted as in the file (a table stands for every key in it).
pub fn restart_only_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(key, _)| *key)
}

impl Config {
    /// `self` (a configuration just loaded for a reload) with the running values of the
    /// restart-only keys, and the keys among them whose values differ from `running`,
    /// dotted and as deep as they differ (`server.listen`, not `server`).
    pub fn keep_restart_only(&self, running: &Config) -> (Config, Vec<String>) {
        let mut kept = self.clone();
        for (_, keep) in KEYS {
            keep(&mut kept, running);
        }
        let (old, new) = (
            serde_json::to_value(running).unwrap_or_default(),
            serde_json::to_value(self).unwrap_or_default(),
        );
        let mut changed = Vec::new();
        for key in restart_only_keys() {
            let pointer = pointer(key);
            diff_keys(
                key,
                old.pointer(&pointer),
                new.pointer(&pointer),
                &mut changed,
            );
        }
        (kept, changed)
    }
}

/// The JSON pointer of a dotted key.
fn pointer(key: &str) -> String {
    format!("/{}", key.replace('.', "/"))
}

/// Pushes the dotted keys under `key` whose values differ between `old` and `new`.
fn diff_keys(key: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                diff_keys(&format!("{key}.{k}"), a.get(k), b.get(k), out);
            }
        }
        (a, b) if a != b => out.push(key.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each restart-only entry keeps the value its name says: with every such key changed,
    /// the kept configuration has the running values there, and every key is named.
    #[test]
    fn every_restart_only_key_keeps_its_running_value_and_is_named() {
        let running = Config::default();
        let mut new = running.clone();
        new.server.threads = running.server.threads + 3;
        new.store.events_maxlen = running.store.events_maxlen + 1;
        new.telemetry = Some(crate::TelemetryConfig::default());
        new.features.pipelining = !running.features.pipelining;
        new.features.hash_state = !running.features.hash_state;
        new.tools.workers = running.tools.workers + 1;
        new.tools.queue_capacity = running.tools.queue_capacity + 1;
        let (kept, changed) = new.keep_restart_only(&running);
        let (kept, running) = (
            serde_json::to_value(&kept).expect("json"),
            serde_json::to_value(&running).expect("json"),
        );
        for key in restart_only_keys() {
            assert_eq!(
                kept.pointer(&pointer(key)),
                running.pointer(&pointer(key)),
                "{key}"
            );
            assert!(
                changed
                    .iter()
                    .any(|c| c == key || c.starts_with(&format!("{key}."))),
                "{key} not named in {changed:?}"
            );
        }
        assert!(
            changed.contains(&"server.threads".to_owned()),
            "{changed:?}"
        );
    }

    #[test]
    fn keys_a_reload_applies_are_kept_from_the_new_file_and_not_named() {
        let running = Config::default();
        let mut new = running.clone();
        new.sse.retry_ms = running.sse.retry_ms + 1;
        new.features.sse_fanout = !running.features.sse_fanout;
        let (kept, changed) = new.keep_restart_only(&running);
        assert_eq!(kept, new);
        assert_eq!(changed, Vec::<String>::new());
    }
}

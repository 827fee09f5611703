use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// What a declared tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    /// `"http"`: POSTs the call's input JSON to a peer of the `[upstreams.NAME]` group named
    /// by `upstream` (healthy peers only, the group's balancing), at `path`; the JSON
    /// response body is the output.
    Http,
    /// `"sha256"`: hex SHA-256 of `{"text": ".."}` on the CPU worker pool.
    Sha256,
    /// `"json_query"`: the value at a JSON pointer (`*` matches every element or member)
    /// inside `{"value": .., "path": "/a/*/b"}`, on the CPU worker pool.
    JsonQuery,
    /// `"regex_extract"`: the matches of `{"pattern": "..", "text": ".."}` (and their
    /// capture groups), on the CPU worker pool.
    RegexExtract,
}

impl ToolKind {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Http => "http",
            ToolKind::Sha256 => "sha256",
            ToolKind::JsonQuery => "json_query",
            ToolKind::RegexExtract => "regex_extract",
        }
    }
}

/// One `[tools.NAME]` table: a tool agents may call by `NAME`.
///
/// `NAME` may contain only ASCII letters, digits, `_` and `-` (at most 64), and may not be
/// one of the `[tools]` settings' names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// `"http"`, `"sha256"`, `"json_query"` or `"regex_extract"`. Required.
    pub kind: ToolKind,
    /// `kind = "http"` only, and required there: the `[upstreams.NAME]` group to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `kind = "http"` only: the request path, starting with `/`. Default `"/"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// This tool's per-call deadline, in milliseconds, instead of `tools.timeout_ms`.
    /// At least 1. Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl ToolConfig {
    /// The per-call deadline override, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// The HTTP path (`kind = "http"`): [`path`](Self::path) or `/`.
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// `[tools]`: how `POST /v2/sessions/{id}/tools` runs a batch of tool calls, and the tools
/// agents may call, one `[tools.NAME]` table each ([`ToolConfig`]).
///
/// The settings and the tool tables share the `[tools]` table: a key naming a setting is a
/// setting, any other key must be a table defining a tool (so a misspelt setting is an
/// error, not a tool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolsConfig {
    /// Most calls of one batch running at once (with `features.parallel_tools`; without it,
    /// one). 1..=1024. Default 8.
    pub max_parallel: usize,
    /// Per-call deadline, in milliseconds; a call still running then fails as `timed_out`
    /// and its dependents are skipped. 1..=3_600_000. Default 10_000.
    pub timeout_ms: u64,
    /// Threads of the CPU worker pool that runs built-in tools (and Rust tools that ask for
    /// it), so CPU work never blocks the proxy's event loops. 0 = one per CPU core.
    /// At most 1024. Default 0.
    pub workers: usize,
    /// Jobs that may wait for a pool thread; a call that finds the queue full fails at once
    /// (`worker pool queue is full`). At least 1. Default 1024.
    pub queue_capacity: usize,
    /// Most calls in one batch; more is a 400. 1..=1000. Default 64.
    pub max_calls: usize,
    /// Largest `input` of one call, in bytes of compact JSON, as sent (larger is a 400) and
    /// again after its `$ref`s are replaced by the values they point at (larger stops the
    /// batch with a 413 naming the call). At least 1. Default 65_536.
    pub max_input_bytes: usize,
    /// Most bytes of JSON one batch may hold: every call's input after `$ref` resolution
    /// plus every call's output (or error); the response carries those outputs once more.
    /// A batch that would go over is refused, or stopped while running, with a 413 naming
    /// the call. At least `max_input_bytes`. Default 16_777_216 (16 MiB).
    pub max_batch_bytes: usize,
    /// Largest response body an `http` tool accepts from its upstream, in bytes; a larger
    /// one fails the call. At least 1. Default 1_048_576.
    pub max_output_bytes: usize,
    /// `[tools.NAME]`: the declared tools, by name. Default: none.
    pub tools: BTreeMap<String, ToolConfig>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_parallel: 8,
            timeout_ms: 10_000,
            workers: 0,
            queue_capacity: 1024,
            max_calls: 64,
            max_input_bytes: 65_536,
            max_batch_bytes: 16_777_216,
            max_output_bytes: 1_048_576,
            tools: BTreeMap::new(),
        }
    }
}

impl ToolsConfig {
    /// The settings' keys: no tool may take one of these names.
    pub const SETTINGS: [&'static str; 8] = [
        "max_parallel",
        "timeout_ms",
        "workers",
        "queue_capacity",
        "max_calls",
        "max_input_bytes",
        "max_batch_bytes",
        "max_output_bytes",
    ];

    /// [`timeout_ms`](Self::timeout_ms) as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`workers`](Self::workers) resolved: 0 becomes the number of CPU cores.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl Serialize for ToolsConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Self::SETTINGS.len() + self.tools.len()))?;
        map.serialize_entry("max_parallel", &self.max_parallel)?;
        map.serialize_entry("timeout_ms", &self.timeout_ms)?;
        map.serialize_entry("workers", &self.workers)?;
        map.serialize_entry("queue_capacity", &self.queue_capacity)?;
        map.serialize_entry("max_calls", &self.max_calls)?;
        map.serialize_entry("max_input_bytes", &self.max_input_bytes)?;
        map.serialize_entry("max_batch_bytes", &self.max_batch_bytes)?;
        map.serialize_entry("max_output_bytes", &self.max_output_bytes)?;
        for (name, tool) in &self.tools {
            map.serialize_entry(name, tool)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ToolsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ToolsVisitor)
    }
}

struct ToolsVisitor;

impl<'de> Visitor<'de> for ToolsVisitor {
    type Value = ToolsConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [tools] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ToolsConfig, A::Error> {
        let mut config = ToolsConfig::default();
        while let Some(key) = map.next_key::<String>()? {
            // Each value is read inside `next_value*`, so an error carries the value's
            // position and the key's name.
            match key.as_str() {
                "max_parallel" => config.max_parallel = map.next_value()?,
                "timeout_ms" => config.timeout_ms = map.next_value()?,
                "workers" => config.workers = map.next_value()?,
                "queue_capacity" => config.queue_capacity = map.next_value()?,
                "max_calls" => config.max_calls = map.next_value()?,
                "max_input_bytes" => config.max_input_bytes = map.next_value()?,
                "max_batch_bytes" => config.max_batch_bytes = map.next_value()?,
                "max_output_bytes" => config.max_output_bytes = map.next_value()?,
                _ => {
                    let tool = map.next_value_seed(ToolSeed(&key))?;
                    if config.tools.insert(key.clone(), tool).is_some() {
                        return Err(de::Error::custom(format!("duplicate tool `{key}`")));
                    }
                }
            }
        }
        Ok(config)
    }
}

/// Reads the value of a key that is not a setting: it must be a `[tools.NAME]` table.
struct ToolSeed<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for ToolSeed<'_> {
    type Value = ToolConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ToolConfig, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ToolSeed<'_> {
    fn not_a_table<E: de::Error>(&self) -> E {
        E::custom(format!(
            "unknown field `{}`: [tools] takes {}, or a [tools.NAME] table declaring a tool",
            self.0,
            ToolsConfig::SETTINGS.join(", ")
        ))
    }
}

impl<'de> Visitor<'de> for ToolSeed<'_> {
    type Value = ToolConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [tools.NAME] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ToolConfig, A::Error> {
        ToolConfig::deserialize(de::value::MapAccessDeserializer::new(map))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ToolConfig, E> {
        Err(self.not_a_table())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ToolConfig, E> {
        Err(self.not_a_table())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ToolConfig, E> {
        Err(self.not_a_table())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ToolConfig, E> {
        Err(self.not_a_table())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<ToolConfig, E> {
        Err(self.not_a_table())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<ToolConfig, A::Error> {
        Err(self.not_a_table())
    }
}

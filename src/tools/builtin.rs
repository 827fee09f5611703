//! The built-in CPU tools. Each does its work on the [`WorkerPool`](super::WorkerPool)
//! (through [`ToolContext::run_cpu`]), never on an event-loop thread.
//!
//! | kind | input | output |
//! |---|---|---|
//! | `sha256` | `{"text": ".."}` | `{"sha256": "<64 hex digits>"}` (of the UTF-8 text) |
//! | `json_query` | `{"value": <any>, "path": "/a/0/b"}` | the value at the JSON pointer `path`; with `*` segments (every array element or object member) the array of all matches, in order |
//! | `regex_extract` | `{"pattern": "..", "text": "..", "limit": 100}` | `{"matches": [{"match", "start", "end", "groups": [..], "named": {..}}]}`, at most `limit` (default 100, at most 10000) |
//!
//! `regex_extract` uses the `regex` crate: matching is linear in the text, whatever the
//! pattern (no backtracking), and a pattern that would compile to more than 1 MiB is
//! refused, so a hostile pattern cannot stall a worker. Byte offsets are UTF-8 offsets.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Tool, ToolContext, ToolError};

/// Largest compiled regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Matches `regex_extract` returns by default.
const DEFAULT_MATCH_LIMIT: usize = 100;
/// Most matches `regex_extract` may be asked for.
const MAX_MATCH_LIMIT: usize = 10_000;

/// `sha256`: the hex SHA-256 digest of a text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256Tool;

/// Input of [`Sha256Tool`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sha256Input {
    /// The text to hash (its UTF-8 bytes).
    pub text: String,
}

/// Output of [`Sha256Tool`].
#[derive(Debug, Serialize)]
pub struct Sha256Output {
    /// Lower-case hex digest.
    pub sha256: String,
}

impl Tool for Sha256Tool {
    type Input = Sha256Input;
    type Output = Sha256Output;

    async fn call(&self, input: Sha256Input, cx: &ToolContext) -> Result<Sha256Output, ToolError> {
        cx.run_cpu(move || Sha256Output {
            sha256: hex(&Sha256::digest(input.text.as_bytes())),
        })
        .await
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `json_query`: extracts values from a JSON document by a JSON pointer with `*` wildcards.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonQueryTool;

/// Input of [`JsonQueryTool`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonQueryInput {
    /// The document.
    pub value: Value,
    /// A JSON pointer (`""` or starting with `/`); a `*` segment matches every element of
    /// an array or member of an object.
    pub path: String,
}

impl Tool for JsonQueryTool {
    type Input = JsonQueryInput;
    type Output = Value;

    async fn call(&self, input: JsonQueryInput, cx: &ToolContext) -> Result<Value, ToolError> {
        cx.run_cpu(move || query(&input.value, &input.path)).await?
    }
}

/// The value at `path` in `value`; with wildcards, the array of every match.
pub fn query(value: &Value, path: &str) -> Result<Value, ToolError> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(ToolError::new(
            "path: must be a JSON pointer: empty or starting with '/'",
        ));
    }
    // A segment written `*` is a wildcard; a member literally named `*` can't be addressed.
    let segments: Vec<Segment> = path
        .split('/')
        .skip(1)
        .map(|s| match s {
            "*" => Segment::Any,
            _ => Segment::Key(s.replace("~1", "/").replace("~0", "~")),
        })
        .collect();
    let mut matches = Vec::new();
    collect(value, &segments, &mut matches);
    if segments.contains(&Segment::Any) {
        return Ok(Value::Array(matches.into_iter().cloned().collect()));
    }
    matches
        .pop()
        .cloned()
        .ok_or_else(|| ToolError::new(format!("path: no value at {path:?}")))
}

/// One step of a `json_query` path.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// `*`: every element or member.
    Any,
    /// A member name or array index (unescaped).
    Key(String),
}

fn collect<'v>(value: &'v Value, segments: &[Segment], out: &mut Vec<&'v Value>) {
    let Some((segment, rest)) = segments.split_first() else {
        out.push(value);
        return;
    };
    match (segment, value) {
        (Segment::Any, Value::Array(items)) => {
            for item in items {
                collect(item, rest, out);
            }
        }
        (Segment::Any, Value::Object(map)) => {
            for item in map.values() {
                collect(item, rest, out);
            }
        }
        (Segment::Key(key), Value::Array(items)) => {
            // RFC 6901 indexes: digits, no leading zero ("01" and "+1" name no element).
            let canonical = key.bytes().all(|b| b.is_ascii_digit())
                && (key.as_str() == "0" || !key.starts_with('0'));
            let index = canonical.then(|| key.parse::<usize>().ok()).flatten();
            if let Some(item) = index.and_then(|i| items.get(i)) {
                collect(item, rest, out);
            }
        }
        (Segment::Key(key), Value::Object(map)) => {
            if let Some(item) = map.get(key.as_str()) {
                collect(item, rest, out);
            }
        }
        _ => {}
    }
}

/// `regex_extract`: every match of a regular expression in a text, with capture groups.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegexExtractTool;

/// Input of [`RegexExtractTool`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexExtractInput {
    /// The pattern, in the `regex` crate's syntax.
    pub pattern: String,
    /// The text to search.
    pub text: String,
    /// Most matches to return. 1..=10000. Default 100.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One match of [`RegexExtractTool`].
#[derive(Debug, Serialize)]
pub struct RegexMatch {
    /// The matched text.
    #[serde(rename = "match")]
    pub text: String,
    /// Byte offset of its start.
    pub start: usize,
    /// Byte offset of its end.
    pub end: usize,
    /// Capture groups 1.., `null` where a group did not take part.
    pub groups: Vec<Option<String>>,
    /// Named capture groups.
    pub named: Map<String, Value>,
}

/// Output of [`RegexExtractTool`].
#[derive(Debug, Serialize)]
pub struct RegexExtractOutput {
    /// The matches, in order.
    pub matches: Vec<RegexMatch>,
}

impl Tool for RegexExtractTool {
    type Input = RegexExtractInput;
    type Output = RegexExtractOutput;

    async fn call(
        &self,
        input: RegexExtractInput,
        cx: &ToolContext,
    ) -> Result<RegexExtractOutput, ToolError> {
        let limit = input.limit.unwrap_or(DEFAULT_MATCH_LIMIT);
        if !(1..=MAX_MATCH_LIMIT).contains(&limit) {
            return Err(ToolError::new(format!(
                "input.limit: must be between 1 and {MAX_MATCH_LIMIT}"
            )));
        }
        cx.run_cpu(move || extract(&input.pattern, &input.text, limit))
            .await?
    }
}

/// Up to `limit` matches of `pattern` in `text`.
pub fn extract(pattern: &str, text: &str, limit: usize) -> Result<RegexExtractOutput, ToolError> {
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ToolError::new(format!("input.pattern: {e}")))?;
    let names: Vec<Option<&str>> = regex.capture_names().collect();
    let matches = regex
        .captures_iter(text)
        .take(limit)
        .filter_map(|caps| {
            let whole = caps.get(0)?;
            let group = |i: usize| caps.get(i).map(|m| m.as_str().to_owned());
            Some(RegexMatch {
                text: whole.as_str().to_owned(),
                start: whole.start(),
                end: whole.end(),
                groups: (1..caps.len()).map(group).collect(),
                named: names
                    .iter()
                    .enumerate()
                    .filter_map(|(i, name)| {
                        let value = group(i).map_or(Value::Null, Value::String);
                        name.map(|n| (n.to_owned(), value))
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(RegexExtractOutput { matches })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{DynTool, WorkerPool};
    use prometheus_client::metrics::gauge::Gauge;
    use serde_json::json;

    fn raw(value: Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).expect("encodes")
    }

    fn parsed(out: &serde_json::value::RawValue) -> Value {
        serde_json::from_str(out.get()).expect("JSON")
    }

    fn cx(pool: &WorkerPool) -> ToolContext {
        ToolContext::new("s1".parse().expect("id"), "c1", pool.clone())
    }

    #[tokio::test]
    async fn sha256_hashes_text() {
        let pool = WorkerPool::new(1, 4, Gauge::default());
        let out = Sha256Tool
            .call_json(raw(json!({"text": "abc"})), &cx(&pool))
            .await
            .expect("hashes");
        assert_eq!(
            parsed(&out),
            json!({"sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})
        );
        let err = Sha256Tool
            .call_json(raw(json!({"txt": "abc"})), &cx(&pool))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("input: unknown field `txt`"),
            "{err}"
        );
    }

    #[test]
    fn json_query_follows_pointers_and_wildcards() {
        let doc = json!({"items": [{"n": 1, "t": ["a"]}, {"n": 2}, {"x": 0}], "a/b": {"~": 5}});
        assert_eq!(query(&doc, "/items/1/n"), Ok(json!(2)));
        assert_eq!(query(&doc, ""), Ok(doc.clone()));
        assert_eq!(query(&doc, "/a~1b/~0"), Ok(json!(5)));
        assert_eq!(query(&doc, "/items/*/n"), Ok(json!([1, 2])));
        assert_eq!(query(&doc, "/*/*/t/0"), Ok(json!(["a"])));
        assert_eq!(query(&doc, "/items/*/zz"), Ok(json!([])));
        assert!(
            query(&doc, "/items/9")
                .unwrap_err()
                .message()
                .contains("no value")
        );
        assert!(query(&doc, "items").is_err());
        assert!(query(&doc, "/items/01").is_err(), "no leading zeros");
        assert!(query(&doc, "/items/+1").is_err());
    }

    #[test]
    fn regex_extract_returns_matches_and_groups() {
        let out = extract(r"(?P<k>\w+)=(\d+)?", "a=1 b= c=33", 10).expect("valid");
        let out = serde_json::to_value(out).expect("json");
        assert_eq!(
            out,
            json!({"matches": [
                {"match": "a=1", "start": 0, "end": 3, "groups": ["a", "1"], "named": {"k": "a"}},
                {"match": "b=", "start": 4, "end": 6, "groups": ["b", null], "named": {"k": "b"}},
                {"match": "c=33", "start": 7, "end": 11, "groups": ["c", "33"], "named": {"k": "c"}},
            ]})
        );
        assert_eq!(extract(r"\d", "1234", 2).expect("valid").matches.len(), 2);
        let bad = extract("(", "x", 1).map(|_| ()).unwrap_err();
        assert!(bad.message().starts_with("input.pattern: "), "{bad}");
        let huge = extract(r"\w{1000}{1000}", "x", 1).map(|_| ()).unwrap_err();
        assert!(huge.message().contains("size limit"), "{huge}");
    }

    /// The built-ins queue on the pool: with its only thread held, a hash waits.
    #[tokio::test]
    async fn builtins_run_on_the_worker_pool() {
        let pool = WorkerPool::new(1, 4, Gauge::default());
        let (holder, release_tx) = crate::tools::pool::hold_only_thread(&pool).await;
        let hash = tokio::spawn({
            let cx = cx(&pool);
            async move { Sha256Tool.call_json(raw(json!({"text": ""})), &cx).await }
        });
        while pool.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
        assert!(!hash.is_finished(), "the hash waits for the pool");
        release_tx.send(()).expect("holder waits");
        holder.await.expect("joined").expect("ran");
        let out = hash.await.expect("joined").expect("hashed");
        assert_eq!(
            parsed(&out)["sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

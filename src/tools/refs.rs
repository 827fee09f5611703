//! References from a call's input to its dependencies' outputs.
//!
//! Anywhere in a call's `input`, an object whose only member is `"$ref"` stands for (part
//! of) a dependency's output:
//!
//! | reference | replaced by |
//! |---|---|
//! | `{"$ref": "a"}` | the whole output of call `a` |
//! | `{"$ref": "a#/items/0/name"}` | the value at that [JSON pointer] (RFC 6901) in `a`'s output |
//!
//! The referenced call must be listed in the call's `depends_on` (so the graph, not a
//! guess, decides the order); that, the pointer's syntax and the shape of the object are
//! checked before the batch runs (a 400). Whether the pointer finds a value can only be
//! known once the dependency has run: if it does not, the call fails (`no value at ...`)
//! and its dependents are skipped. References are not recursive: a referenced value is
//! inserted as it is, even if it holds `$ref` objects itself.
//!
//! [JSON pointer]: https://www.rfc-editor.org/rfc/rfc6901

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::ToolError;

/// The member that marks a reference.
pub const REF_KEY: &str = "$ref";

/// A parsed reference: a call id and a JSON pointer into its output (`""`: all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref<'a> {
    /// The referenced call's id.
    pub call: &'a str,
    /// A JSON pointer, empty or starting with `/`.
    pub pointer: &'a str,
}

impl<'a> Ref<'a> {
    /// Parses `"<call id>"` or `"<call id>#<pointer>"`.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        let (call, pointer) = text.split_once('#').unwrap_or((text, ""));
        if call.is_empty() {
            return Err(format!("{text:?} must start with a call id"));
        }
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "{text:?}: the part after '#' must be a JSON pointer starting with '/'"
            ));
        }
        if let Some(bad) = bad_escape(pointer) {
            return Err(format!(
                "{text:?}: '~' must be followed by 0 or 1 in a JSON pointer (found {bad:?})"
            ));
        }
        Ok(Self { call, pointer })
    }
}

/// The first invalid `~` escape of a pointer, if any.
fn bad_escape(pointer: &str) -> Option<String> {
    let bytes = pointer.as_bytes();
    bytes.iter().enumerate().find_map(|(i, b)| {
        (*b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')))
            .then(|| pointer[i..].chars().take(2).collect())
    })
}

/// A malformed or disallowed reference: where it is and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    /// Path of the reference in the request, e.g. `calls[2].input.text`.
    pub path: String,
    /// Why it is refused.
    pub reason: String,
}

/// Checks every reference in `input`: well formed, and naming a call for which `allowed`
/// returns true. Returns the number of references; an error names where (`path` is the
/// input's own path, e.g. `calls[2].input`) and why.
pub fn check(input: &Value, path: &str, allowed: &dyn Fn(&str) -> bool) -> Result<usize, RefError> {
    let mut count = 0;
    let mut path = path.to_owned();
    walk(input, &mut path, &mut |value, at| match as_ref(value) {
        None => Ok(false),
        Some(Err(reason)) => Err(RefError {
            path: at.to_owned(),
            reason,
        }),
        Some(Ok(r)) => {
            if !allowed(r.call) {
                return Err(RefError {
                    path: at.to_owned(),
                    reason: format!(
                        "$ref to {:?}, which is not in this call's depends_on",
                        r.call
                    ),
                });
            }
            count += 1;
            Ok(true)
        }
    })?;
    Ok(count)
}

/// Replaces every reference in `input` by the value it points at in `outputs` (by call
/// id). The input was [`check`]ed, so each referenced call has an output; a pointer that
/// finds no value fails.
pub fn resolve(input: &mut Value, outputs: &HashMap<&str, &Value>) -> Result<(), ToolError> {
    let mut path = "input".to_owned();
    resolve_at(input, &mut path, outputs)
}

fn resolve_at(
    value: &mut Value,
    path: &mut String,
    outputs: &HashMap<&str, &Value>,
) -> Result<(), ToolError> {
    if let Some(parsed) = as_ref(value) {
        let r = parsed.map_err(|reason| ToolError::new(format!("{path}: {reason}")))?;
        let output = outputs.get(r.call).ok_or_else(|| {
            ToolError::new(format!("{path}: $ref to {:?}, which has no output", r.call))
        })?;
        let found = output.pointer(r.pointer).ok_or_else(|| {
            ToolError::new(format!(
                "{path}: $ref \"{}#{}\": no value at {:?} in the output of {:?}",
                r.call, r.pointer, r.pointer, r.call
            ))
        })?;
        *value = found.clone();
        return Ok(());
    }
    let len = path.len();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let _ = write!(path, "[{i}]");
                resolve_at(item, path, outputs)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                push_key(path, key);
                resolve_at(item, path, outputs)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// `Some` when `value` is meant as a reference (an object with a `$ref` member): the parsed
/// reference, or why it is malformed.
fn as_ref(value: &Value) -> Option<Result<Ref<'_>, String>> {
    let Value::Object(map) = value else {
        return None;
    };
    let target = map.get(REF_KEY)?;
    if map.len() > 1 {
        return Some(Err(
            "an object with \"$ref\" must have no other members".to_owned()
        ));
    }
    Some(match target {
        Value::String(text) => Ref::parse(text).map_err(|e| format!("$ref {e}")),
        _ => Err("$ref must be a string: \"<call id>\" or \"<call id>#<JSON pointer>\"".into()),
    })
}

/// Visits every value depth first; `visit` returns whether the value is a leaf (a
/// reference) whose inside must not be walked.
fn walk(
    value: &Value,
    path: &mut String,
    visit: &mut dyn FnMut(&Value, &str) -> Result<bool, RefError>,
) -> Result<(), RefError> {
    if visit(value, path)? {
        return Ok(());
    }
    let len = path.len();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                walk(item, path, visit)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                push_key(path, key);
                walk(item, path, visit)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Appends `.key`, or `["key"]` when the key is not a plain identifier.
fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        let _ = write!(path, "[{key:?}]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_references() {
        assert_eq!(
            Ref::parse("a"),
            Ok(Ref {
                call: "a",
                pointer: ""
            })
        );
        assert_eq!(
            Ref::parse("a#/x/0"),
            Ok(Ref {
                call: "a",
                pointer: "/x/0"
            })
        );
        assert!(Ref::parse("#/x").is_err());
        assert!(Ref::parse("a#x").is_err());
        assert!(Ref::parse("a#/x~2").is_err());
        assert!(Ref::parse("a#/x~1y~0").is_ok());
    }

    #[test]
    fn check_names_the_path_of_a_bad_reference() {
        let deps = |id: &str| id == "a";
        let input = json!({"x": [1, {"$ref": "a#/v"}], "y": {"$ref": "a"}});
        assert_eq!(check(&input, "calls[1].input", &deps), Ok(2));
        let cases = [
            (
                json!({"x": [0, {"$ref": "b"}]}),
                "calls[1].input.x[1]",
                "not in this call's depends_on",
            ),
            (
                json!({"odd key": {"$ref": 5}}),
                "calls[1].input[\"odd key\"]",
                "$ref must be a string",
            ),
            (
                json!({"$ref": "a", "other": 1}),
                "calls[1].input",
                "no other members",
            ),
            (
                json!([{"$ref": "a#v"}]),
                "calls[1].input[0]",
                "JSON pointer",
            ),
        ];
        for (input, at, reason) in cases {
            let err = check(&input, "calls[1].input", &deps).unwrap_err();
            assert_eq!(err.path, at, "{input}");
            assert!(err.reason.contains(reason), "{input}: {}", err.reason);
        }
    }

    #[test]
    fn resolves_whole_outputs_and_pointers() {
        let a = json!({"items": [{"name": "x"}], "n": 2});
        let outputs = HashMap::from([("a", &a)]);
        let mut input = json!({"all": {"$ref": "a"}, "name": {"$ref": "a#/items/0/name"}, "k": [{"$ref": "a#/n"}]});
        resolve(&mut input, &outputs).expect("resolves");
        assert_eq!(input, json!({"all": a, "name": "x", "k": [2]}));

        let mut missing = json!({"v": {"$ref": "a#/nope"}});
        let err = resolve(&mut missing, &outputs).unwrap_err();
        assert!(
            err.message()
                .starts_with("input.v: $ref \"a#/nope\": no value")
        );
    }
}

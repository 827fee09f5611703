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

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

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

/// A call's input with every reference looked up in its dependencies' outputs, but not
/// yet written out: [`len`](Self::len) is the size the resolved input will have, known
/// before a byte of it exists, so an input that references a large output many times is
/// refused without being built.
///
/// Outputs are compact JSON text ([`RawValue`]); a reference finds its value as a slice of
/// that text (a pointer is followed by parsing only the containers on its way, each once
/// per input), and [`materialise`](Self::materialise) copies the slices into the one
/// resolved text. Nothing is parsed into a `Value` tree.
#[derive(Debug)]
pub struct Resolution<'a> {
    input: &'a Value,
    targets: HashMap<&'a str, &'a RawValue>,
    len: usize,
}

impl<'a> Resolution<'a> {
    /// Looks up every reference of `input` in `outputs` (the outputs of the call's
    /// dependencies, by call id). The input was [`check`]ed, so each referenced call has an
    /// output; a pointer that finds no value fails, naming where the reference is.
    pub fn new(input: &'a Value, outputs: &HashMap<&str, &'a RawValue>) -> Result<Self, ToolError> {
        let mut lookup = Lookup {
            outputs,
            targets: HashMap::new(),
            containers: HashMap::new(),
        };
        let mut path = "input".to_owned();
        let len = lookup.size(input, &mut path)?;
        Ok(Self {
            input,
            targets: lookup.targets,
            len,
        })
    }

    /// Bytes of the resolved input, as compact JSON (a referenced value counts as the
    /// length of its text in the output). Saturates at `usize::MAX`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the resolved input is empty (never: the smallest JSON value is one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The resolved input: the input with each reference replaced by the text it points
    /// at. Allocates [`len`](Self::len) bytes; check it first.
    pub fn materialise(&self) -> Result<Box<RawValue>, ToolError> {
        let mut out = Vec::with_capacity(self.len);
        let spliced = Spliced {
            value: self.input,
            targets: &self.targets,
        };
        serde_json::to_writer(&mut out, &spliced)
            .map_err(|e| ToolError::new(format!("input could not be encoded: {e}")))?;
        let text = String::from_utf8(out)
            .map_err(|e| ToolError::new(format!("input could not be encoded: {e}")))?;
        RawValue::from_string(text)
            .map_err(|e| ToolError::new(format!("input could not be encoded: {e}")))
    }
}

/// The state of looking up one input's references.
struct Lookup<'o, 'a> {
    outputs: &'o HashMap<&'o str, &'a RawValue>,
    /// Each distinct reference text, and the value it found.
    targets: HashMap<&'a str, &'a RawValue>,
    /// Containers already parsed on the way of a pointer, by the address of their text:
    /// many references into one large array parse it once, not once each.
    containers: HashMap<usize, Container<'a>>,
}

/// The members of a JSON container, as slices of its text.
enum Container<'a> {
    Array(Vec<&'a RawValue>),
    Object(HashMap<String, &'a RawValue>),
    /// A string, number, `true`, `false` or `null`: a pointer cannot go further.
    Scalar,
}

impl<'a> Lookup<'_, 'a> {
    /// The resolved size of `value`, looking up its references on the way.
    fn size(&mut self, value: &'a Value, path: &mut String) -> Result<usize, ToolError> {
        if let Some(parsed) = as_ref(value) {
            let r = parsed.map_err(|reason| ToolError::new(format!("{path}: {reason}")))?;
            let text = match value.get(REF_KEY) {
                Some(Value::String(text)) => text.as_str(),
                _ => return Err(ToolError::new(format!("{path}: malformed $ref"))),
            };
            if let Some(found) = self.targets.get(text) {
                return Ok(found.get().len());
            }
            let output = *self.outputs.get(r.call).ok_or_else(|| {
                ToolError::new(format!("{path}: $ref to {:?}, which has no output", r.call))
            })?;
            let found = self.follow(output, r.pointer).ok_or_else(|| {
                ToolError::new(format!(
                    "{path}: $ref \"{}#{}\": no value at {:?} in the output of {:?}",
                    r.call, r.pointer, r.pointer, r.call
                ))
            })?;
            self.targets.insert(text, found);
            return Ok(found.get().len());
        }
        let len = path.len();
        let size = match value {
            Value::Array(items) => {
                // `[`, `]` and a comma between items.
                let mut size = 2 + items.len().saturating_sub(1);
                for (i, item) in items.iter().enumerate() {
                    let _ = write!(path, "[{i}]");
                    size = size.saturating_add(self.size(item, path)?);
                    path.truncate(len);
                }
                size
            }
            Value::Object(map) => {
                // `{`, `}`, a comma between members and a colon in each.
                let mut size = 2 + map.len().saturating_sub(1) + map.len();
                for (key, item) in map {
                    size = size.saturating_add(json_len(key));
                    push_key(path, key);
                    size = size.saturating_add(self.size(item, path)?);
                    path.truncate(len);
                }
                size
            }
            scalar => json_len(scalar),
        };
        Ok(size)
    }

    /// The value at `pointer` (RFC 6901, as `Value::pointer` reads it) in `root`.
    fn follow(&mut self, root: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
        if pointer.is_empty() {
            return Some(root);
        }
        let mut at = root;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            let key = at.get().as_ptr() as usize;
            let container = match self.containers.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(Container::parse(at)?),
            };
            at = match container {
                Container::Array(items) => *items.get(array_index(&token)?)?,
                Container::Object(members) => *members.get(&token)?,
                Container::Scalar => return None,
            };
        }
        Some(at)
    }
}

impl<'a> Container<'a> {
    /// The members of `raw`'s text, each still unparsed.
    fn parse(raw: &'a RawValue) -> Option<Self> {
        let text = raw.get();
        match text.trim_start().as_bytes().first() {
            Some(b'[') => serde_json::from_str(text).ok().map(Container::Array),
            Some(b'{') => serde_json::from_str(text).ok().map(Container::Object),
            _ => Some(Container::Scalar),
        }
    }
}

/// An array index token as RFC 6901 (and `Value::pointer`) read it: digits without a
/// leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// The input written out with each reference replaced by the text it found.
struct Spliced<'r, 'a> {
    value: &'a Value,
    targets: &'r HashMap<&'a str, &'a RawValue>,
}

impl Serialize for Spliced<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nested = |value| Spliced {
            value,
            targets: self.targets,
        };
        if as_ref(self.value).is_some() {
            let found = match self.value.get(REF_KEY) {
                Some(Value::String(text)) => self.targets.get(text.as_str()),
                _ => None,
            };
            return match found {
                Some(found) => found.serialize(serializer),
                None => Err(serde::ser::Error::custom("a $ref was not looked up")),
            };
        }
        match self.value {
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&nested(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, item) in map {
                    out.serialize_entry(key, &nested(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// The size of `value` as compact JSON, without building the text.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that cannot be serialized counts as written
    // so far.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
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

    fn raw(value: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(value).expect("encodes")
    }

    fn resolve(input: &Value, outputs: &HashMap<&str, &RawValue>) -> Result<Value, ToolError> {
        let resolution = Resolution::new(input, outputs)?;
        let text = resolution.materialise()?;
        assert_eq!(text.get().len(), resolution.len(), "len is exact: {text}");
        Ok(serde_json::from_str(text.get()).expect("valid JSON"))
    }

    #[test]
    fn resolves_whole_outputs_and_pointers() {
        let a = json!({"items": [{"name": "x"}], "n": 2});
        let a_raw = raw(&a);
        let outputs = HashMap::from([("a", &*a_raw)]);
        let input = json!({"all": {"$ref": "a"}, "name": {"$ref": "a#/items/0/name"}, "k": [{"$ref": "a#/n"}]});
        assert_eq!(
            resolve(&input, &outputs),
            Ok(json!({"all": a, "name": "x", "k": [2]}))
        );

        let missing = json!({"v": {"$ref": "a#/nope"}});
        let err = resolve(&missing, &outputs).unwrap_err();
        assert!(
            err.message()
                .starts_with("input.v: $ref \"a#/nope\": no value"),
            "{err}"
        );
    }

    /// The computed length is the length of the text written, whatever the JSON holds.
    #[test]
    fn the_length_is_known_before_the_input_is_built() {
        let a = json!({"s": "quote \" slash \\ tab \t é ☃ \u{1}", "f": 1.5e300, "neg": -7,
            "e": [], "o": {}, "t": true, "z": null, "odd key\"": [1, [2, {}]]});
        let a_raw = raw(&a);
        let outputs = HashMap::from([("a", &*a_raw)]);
        let inputs = [
            json!(null),
            json!([]),
            json!({}),
            json!("é\n"),
            json!([1, 2.25, -3, "x", {"k\"ey": [null, true]}]),
            json!({"whole": {"$ref": "a"}, "part": [{"$ref": "a#/s"}, {"$ref": "a#/odd key\""}]}),
            json!([{"$ref": "a#/e"}, {"$ref": "a#/o"}, {"$ref": "a#/f"}, {"$ref": "a#/z"}]),
        ];
        for input in inputs {
            let resolved = resolve(&input, &outputs).expect("resolves");
            assert_eq!(resolved, resolve_by_clone(&input, &a), "{input}");
        }
    }

    /// What resolution means, the slow way: clone the pointed-at values.
    fn resolve_by_clone(input: &Value, a: &Value) -> Value {
        match input {
            Value::Object(map) if map.contains_key(REF_KEY) => {
                let text = map[REF_KEY].as_str().expect("string");
                let pointer = text.split_once('#').map_or("", |(_, p)| p);
                a.pointer(pointer).expect("found").clone()
            }
            Value::Array(items) => items.iter().map(|i| resolve_by_clone(i, a)).collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), resolve_by_clone(v, a)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => other.clone(),
        }
    }

    /// Pointers read the output's text as `Value::pointer` reads the parsed value, even
    /// when the text is not compact (an http tool's answer is kept as it came).
    #[test]
    fn pointers_follow_rfc_6901_like_value_pointer() {
        let text =
            r#" { "a/b" : { "~" : [ 10 , 20 , { "c" : "d" } ] } , "0" : [ "zero" ] , "" : 1 } "#;
        let doc: Value = serde_json::from_str(text).expect("valid");
        let output: Box<RawValue> = serde_json::from_str(text).expect("valid");
        let outputs = HashMap::from([("a", &*output)]);
        let pointers = [
            "",
            "/a~1b",
            "/a~1b/~0",
            "/a~1b/~0/0",
            "/a~1b/~0/2/c",
            "/0/0",
            "/",
            "/a~1b/~0/01",
            "/a~1b/~0/+1",
            "/a~1b/~0/-",
            "/a~1b/~0/3",
            "/a~1b/~0/0/x",
            "/nope",
            "/0/0/0",
        ];
        for pointer in pointers {
            let input = json!({"$ref": format!("a#{pointer}")});
            let found = resolve(&input, &outputs).ok();
            assert_eq!(found.as_ref(), doc.pointer(pointer), "pointer {pointer:?}");
        }
    }

    /// The shape of the attack: 4,000 references to a 60 KB output are 240 MB resolved,
    /// and that is known without building them.
    #[test]
    fn many_references_to_a_large_output_are_measured_not_built() {
        let big = raw(&json!("x".repeat(60_000)));
        let outputs = HashMap::from([("a", &*big)]);
        let input = json!({"value": vec![json!({"$ref": "a"}); 4000], "path": ""});
        let resolution = Resolution::new(&input, &outputs).expect("looks up");
        let expected = r#"{"value":[],"path":""}"#.len() + 4000 * 60_002 + 3999;
        assert_eq!(resolution.len(), expected);
        assert_eq!(
            resolution.targets.len(),
            1,
            "one lookup for 4000 references"
        );
    }
}

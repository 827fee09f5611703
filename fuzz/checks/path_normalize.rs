//! The request-path normaliser the gateway runs before routing
//! (`agentgate_proxy::path::normalize`).
//!
//! Input: the raw path bytes (inputs that are not UTF-8 are skipped: the gateway refuses
//! them before normalising).
//!
//! Properties: no panic; a normal form starts with `/`, is ASCII, has no empty segment, no
//! `\`, no control byte, every `%` starts an upper-case `%XX` that encodes neither an
//! unreserved character, `/`, `\`, `%`+hex nor a control byte; decoded, none of its segments
//! is `.` or `..` (no traversal survives); it is its own normal form, borrowed (idempotent);
//! and an input already in that form comes back unchanged.

use std::borrow::Cow;

use agentgate_proxy::path::normalize;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What keeps `path` from the documented normal form, if anything.
fn problem(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    if !path.starts_with('/') {
        return Some("not absolute".into());
    }
    if !path.is_ascii() {
        return Some("raw non-ASCII".into());
    }
    if path.contains("//") {
        return Some("empty segment".into());
    }
    if path.contains('\\') || bytes.iter().any(u8::is_ascii_control) {
        return Some("backslash or control byte".into());
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Some(format!("'%' at {i} is not an upper-case %XX"));
        };
        let value = hi * 16 + lo;
        if is_unreserved(value) || matches!(value, b'/' | b'\\') || value.is_ascii_control() {
            return Some(format!("%{value:02X} at {i} must not be encoded"));
        }
        let next = &bytes[i + 3..];
        if value == b'%' && next.len() >= 2 && next[..2].iter().all(u8::is_ascii_hexdigit) {
            return Some(format!("double encoding at {i}"));
        }
        decoded.push(value);
        i += 3;
    }
    decoded
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
        .then(|| "a dot segment survives".into())
}

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let Ok(raw) = std::str::from_utf8(input) else {
        return;
    };
    match normalize(raw) {
        Ok(normal) => {
            if let Some(problem) = problem(&normal) {
                panic!("{raw:?} normalised to a path not in normal form: {problem}");
            }
            match normalize(&normal) {
                Ok(Cow::Borrowed(again)) => assert_eq!(again, &*normal, "not idempotent"),
                other => panic!("{normal:?} normalises again to {other:?}"),
            }
            if let Cow::Owned(changed) = &normal {
                // An input that was already normal comes back borrowed, so a changed path
                // means the input was not normal.
                assert_ne!(changed, raw, "an unchanged path was copied");
            }
        }
        Err(_) => {
            // Refusing is always allowed; what must never happen is a refusal of a path in
            // normal form.
            // (A `;` after a dot segment is refused though its decoded form looks normal.)
            assert!(
                problem(raw).is_some() || raw.contains(';'),
                "refused a path in normal form: {raw:?}"
            );
        }
    }
}

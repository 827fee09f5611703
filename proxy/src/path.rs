//! [`normalize`]: the one request-path normaliser. The gateway runs it on every request
//! before routing, and forwards (and serves in-process) the normalised path, so the path a
//! route matched is the path its target receives: `/public/../admin` cannot match a
//! `/public` route and then reach `/admin` upstream.
//!
//! The normal form, per RFC 3986:
//! - percent-encodings of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded
//!   (§6.2.2.2), every other percent-encoding is kept with upper-case hex (§6.2.2.1), and raw
//!   non-ASCII bytes are percent-encoded;
//! - dot segments are removed (§5.2.4, after decoding: `%2e%2e` is `..`); a trailing `.` or
//!   `..` leaves a trailing `/`.
//!
//! Refused ([`PathError`], answered `400`), because origins disagree on what they mean:
//! an encoded `/` (`%2F`), a `\` raw or encoded (`%5C`), NUL and other control bytes raw or
//! encoded, a `%` not followed by two hex digits, an encoded `%` followed by two hex digits
//! (`%252e`: double encoding, which an origin that decodes twice reads as `.`), `..` that
//! would climb above the root, a dot segment carrying parameters (`..;x`, which Java
//! servers read as `..`), an empty segment (`//`: significant to RFC 3986, merged away by
//! nginx and many frameworks, so `//admin` would not match an `/admin` route yet reach
//! `/admin`; a trailing `/` is fine), and a path that does not start with `/`.
//!
//! The query is not part of the path and is not touched.

use std::borrow::Cow;

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (e.g. `*`).
    NotAbsolute,
    /// A control byte (NUL, CR, LF, DEL...), raw or percent-encoded.
    ControlByte,
    /// A `\`, raw or percent-encoded (`%5C`): some origins read it as `/`.
    Backslash,
    /// A percent-encoded `/` (`%2F`): a separator to some origins, data to others.
    EncodedSlash,
    /// A `%` not followed by two hex digits.
    MalformedPercent,
    /// An encoded `%` followed by two hex digits (`%252e`): double encoding.
    DoubleEncoded,
    /// A `..` segment that would climb above the root.
    AboveRoot,
    /// A `.` or `..` segment with parameters (`..;x`), which some origins read as `..`.
    DotSegmentParameters,
    /// An empty segment (`//`), which some origins merge away and others keep.
    EmptySegment,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "invalid request path: it must start with '/'",
            Self::ControlByte => "invalid request path: control characters are not allowed",
            Self::Backslash => "invalid request path: '\\' (raw or %5C) is not allowed",
            Self::EncodedSlash => "invalid request path: an encoded '/' (%2F) is not allowed",
            Self::MalformedPercent => {
                "invalid request path: '%' must be followed by two hex digits"
            }
            Self::DoubleEncoded => {
                "invalid request path: double percent-encoding (%25 followed by hex digits) \
                 is not allowed"
            }
            Self::AboveRoot => "invalid request path: '..' climbs above the root",
            Self::DotSegmentParameters => {
                "invalid request path: a '.' or '..' segment with ';' parameters is not allowed"
            }
            Self::EmptySegment => "invalid request path: an empty segment ('//') is not allowed",
        })
    }
}

impl std::error::Error for PathError {}

/// The normal form of the request path `raw` (see the [module docs](self)), borrowed when
/// `raw` is already normal. Never panics, whatever the input.
///
/// ```
/// use agentgate_proxy::path::{PathError, normalize};
///
/// assert_eq!(normalize("/public/../admin").as_deref(), Ok("/admin"));
/// assert_eq!(normalize("/a/%7euser/%2e/x%2a").as_deref(), Ok("/a/~user/x%2A"));
/// assert_eq!(normalize("/public/..%2fadmin"), Err(PathError::EncodedSlash));
/// assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
/// ```
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let normal = remove_dot_segments(&decode(raw)?)?;
    // Kept encodings (`%3B`) make a normal path look not normal to the quick check.
    Ok(if normal == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(normal)
    })
}

/// Whether `raw` (starting with `/`) is already in normal form: only plain ASCII bytes
/// (no `%`, `\`, control or non-ASCII byte), no empty segment but a trailing one, and no
/// dot segment. The common case, checked without allocating.
fn is_normal(raw: &str) -> bool {
    let plain = raw
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_control() && b != b'%' && b != b'\\');
    if !plain {
        return false;
    }
    let mut segments = raw[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || is_dot_segment(segment) {
            return false;
        }
    }
    true
}

/// A segment that is `.` or `..`, or one of them followed by `;` parameters.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    name == "." || name == ".."
}

/// Percent-decoding of `raw` (§6.2.2): unreserved characters decoded, other encodings kept
/// with upper-case hex, raw non-ASCII bytes encoded; refusals as in the module docs. The
/// result is ASCII and its `/` are all real separators.
fn decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len() + 8);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let value = match (bytes.get(i).copied(), bytes.get(i + 1).copied()) {
                    (Some(hi), Some(lo)) => match (hex_value(hi), hex_value(lo)) {
                        (Some(hi), Some(lo)) => (hi << 4) | lo,
                        _ => return Err(PathError::MalformedPercent),
                    },
                    _ => return Err(PathError::MalformedPercent),
                };
                i += 2;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    v if v.is_ascii_control() => return Err(PathError::ControlByte),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => push_encoded(&mut out, v),
                }
            }
            b if b.is_ascii_control() => return Err(PathError::ControlByte),
            b if !b.is_ascii() => push_encoded(&mut out, b),
            b => out.push(char::from(b)),
        }
    }
    // Checked on the result, so `%25%32%65` (which decodes to `%252e`) is caught too. Every
    // `%` left in `out` starts an encoding.
    let double = out
        .as_bytes()
        .windows(5)
        .any(|w| w.starts_with(b"%25") && is_hex(w[3]) && is_hex(w[4]));
    if double {
        return Err(PathError::DoubleEncoded);
    }
    Ok(out)
}

/// §5.2.4 over a decoded path (starting with `/`); empty segments refused.
fn remove_dot_segments(decoded: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = decoded[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        trailing_slash = false;
        match segment {
            "" if !last => return Err(PathError::EmptySegment),
            "" | "." => trailing_slash = last,
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            s if is_dot_segment(s) => return Err(PathError::DotSegmentParameters),
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/v2/sessions/abc/stream",
            "/public/",
            "/a/.hidden/...",
            "/a;b=c/d",
            "/~user/x-y_z",
            "/a:b@c!$&'()*+,=",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn traversal_spellings() {
        use PathError::*;
        let table: &[(&str, Result<&str, PathError>)] = &[
            ("/public/../admin", Ok("/admin")),
            ("/public/./../admin", Ok("/admin")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("/public/%2e./admin", Ok("/admin")),
            ("/public/x/../../admin", Ok("/admin")),
            ("/public/%2e/admin", Ok("/public/admin")),
            ("/public/..", Ok("/")),
            ("/public/x/..", Ok("/public/")),
            ("/public/.", Ok("/public/")),
            ("/public//../admin", Err(EmptySegment)),
            ("//admin", Err(EmptySegment)),
            ("/public//", Err(EmptySegment)),
            ("/v2/sessions//events", Err(EmptySegment)),
            ("/public/..%2fadmin", Err(EncodedSlash)),
            ("/public/%2e%2e%2fadmin", Err(EncodedSlash)),
            ("/public/%2E%2E%2Fadmin", Err(EncodedSlash)),
            ("/public/..\\admin", Err(Backslash)),
            ("/public/..%5cadmin", Err(Backslash)),
            ("/public/%252e%252e/admin", Err(DoubleEncoded)),
            ("/public/%25%32%65", Err(DoubleEncoded)),
            ("/public/%25%3B", Ok("/public/%25%3B")),
            ("/public/..;/admin", Err(DotSegmentParameters)),
            ("/public/.;x/admin", Err(DotSegmentParameters)),
            ("/public/%2e%2e;/admin", Err(DotSegmentParameters)),
            ("/..", Err(AboveRoot)),
            ("/../admin", Err(AboveRoot)),
            ("/public/../../admin", Err(AboveRoot)),
            ("/%2e%2e/admin", Err(AboveRoot)),
            ("/public/%00/admin", Err(ControlByte)),
            ("/public/\0/admin", Err(ControlByte)),
            ("/public/%0d%0a", Err(ControlByte)),
            ("/public/%7F", Err(ControlByte)),
            ("/public/%", Err(MalformedPercent)),
            ("/public/%2", Err(MalformedPercent)),
            ("/public/%zz", Err(MalformedPercent)),
            ("/public/%+1", Err(MalformedPercent)),
            ("*", Err(NotAbsolute)),
            ("", Err(NotAbsolute)),
            ("public/../admin", Err(NotAbsolute)),
        ];
        for (raw, want) in table {
            assert_eq!(normalize(raw).as_deref(), want.as_deref(), "{raw:?}");
        }
    }

    #[test]
    fn encodings_are_decoded_or_upper_cased() {
        let table = [
            ("/%41%62%7e%2D%5f", "/Ab~-_"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb%3f%2a", "/a%3Bb%3F%2A"),
            ("/a%25", "/a%25"),
            ("/a%25zz", "/a%25zz"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ];
        for (raw, want) in table {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn the_normal_form_is_a_fixed_point() {
        // Every output above normalises to itself, borrowed.
        for raw in [
            "/public/%2e%2e/admin",
            "/a%3bb%3f%2a",
            "/caf\u{e9}/./x/",
            "/public/%25%3b",
            "/a/b/../c/.",
        ] {
            let once = normalize(raw).expect("normalises").into_owned();
            assert!(
                matches!(normalize(&once), Ok(Cow::Borrowed(p)) if p == once),
                "{raw:?} -> {once:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the input: no panic; a normal path is a fixed point (borrowed), holds
        /// no dot or empty segment, and is ASCII.
        #[test]
        fn normalising_is_total_and_idempotent(raw in "/[a-z./%25cfACF0-9;\\\\é~]{0,24}") {
            if let Ok(once) = normalize(&raw) {
                let once = once.into_owned();
                proptest::prop_assert!(once.is_ascii());
                proptest::prop_assert!(
                    matches!(normalize(&once), Ok(Cow::Borrowed(p)) if p == once),
                    "{:?} -> {:?}", raw, once
                );
                let mut segments = once[1..].split('/').peekable();
                while let Some(segment) = segments.next() {
                    let last = segments.peek().is_none();
                    proptest::prop_assert!(!is_dot_segment(segment));
                    proptest::prop_assert!(!segment.is_empty() || last);
                }
            }
        }
    }
}

//! [`Cursor`]: every stream's position in one `Last-Event-ID`.
//!
//! Form: `<check>.<c1>.<c2>...` — `check` is 4 hex digits identifying the list of streams
//! (so a cursor from another list is refused), then one part per stream in the request's
//! order: the id of the last event delivered from it, empty for none yet. Inside a part,
//! `.`, `%` and bytes outside visible ASCII are `%XX`-escaped. Its size is bounded by the
//! number of streams (at most `max_streams`) and the id length (at most [`MAX_ID`]).

/// Longest accepted id of one stream's event, in bytes.
pub const MAX_ID: usize = 256;

/// Why a `Last-Event-ID` is not a cursor for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorError {
    /// Too long for this many streams.
    TooLong,
    /// Not `<check>.<part>...`, or a part is badly escaped.
    Malformed,
    /// Made for another list of streams.
    OtherStreams,
    /// Does not have one part per stream.
    WrongCount {
        /// Streams requested.
        expected: usize,
        /// Parts found.
        found: usize,
    },
}

impl std::fmt::Display for CursorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong => f.write_str("Last-Event-ID is too long for this many streams"),
            Self::Malformed => f.write_str("Last-Event-ID is not a multiplexed stream cursor"),
            Self::OtherStreams => f.write_str("Last-Event-ID belongs to another list of streams"),
            Self::WrongCount { expected, found } => write!(
                f,
                "Last-Event-ID has {found} positions for {expected} streams"
            ),
        }
    }
}

impl std::error::Error for CursorError {}

/// Every stream's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    check: u16,
    positions: Vec<Option<String>>,
}

/// FNV-1a of the stream names, folded to 16 bits.
fn check_of<S: AsRef<str>>(names: &[S]) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for name in names {
        for &byte in name.as_ref().as_bytes().iter().chain(&[0xff]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    (hash ^ (hash >> 16)) as u16
}

impl Cursor {
    /// Nothing delivered yet, for `names` (in order).
    pub fn start<S: AsRef<str>>(names: &[S]) -> Self {
        Self {
            check: check_of(names),
            positions: vec![None; names.len()],
        }
    }

    /// Reads a `Last-Event-ID` made for `names`.
    pub fn parse<S: AsRef<str>>(text: &str, names: &[S]) -> Result<Self, CursorError> {
        if text.len() > 5 + names.len() * (MAX_ID * 3 + 1) {
            return Err(CursorError::TooLong);
        }
        let mut parts = text.split('.');
        let check = parts
            .next()
            .filter(|c| c.len() == 4)
            .and_then(|c| u16::from_str_radix(c, 16).ok())
            .ok_or(CursorError::Malformed)?;
        if check != check_of(names) {
            return Err(CursorError::OtherStreams);
        }
        let positions = parts
            .map(|part| {
                if part.is_empty() {
                    Some(None)
                } else {
                    unescape(part).filter(|id| id.len() <= MAX_ID).map(Some)
                }
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(CursorError::Malformed)?;
        if positions.len() != names.len() {
            return Err(CursorError::WrongCount {
                expected: names.len(),
                found: positions.len(),
            });
        }
        Ok(Self { check, positions })
    }

    /// Stream `i`'s position (the id of its last delivered event).
    pub fn position(&self, i: usize) -> Option<&str> {
        self.positions.get(i)?.as_deref()
    }

    /// Records that stream `i` delivered event `id`.
    pub fn advance(&mut self, i: usize, id: &str) {
        if let Some(slot) = self.positions.get_mut(i) {
            *slot = Some(id.to_owned());
        }
    }

    /// The `Last-Event-ID` text.
    pub fn encode(&self) -> String {
        let mut out = format!("{:04x}", self.check);
        for position in &self.positions {
            out.push('.');
            if let Some(id) = position {
                escape_into(id, &mut out);
            }
        }
        out
    }
}

fn escape_into(id: &str, out: &mut String) {
    use std::fmt::Write;
    for &byte in id.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'.' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

fn unescape(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_escapes_and_empty_positions() {
        let names = ["a", "b", "c"];
        let mut cursor = Cursor::start(&names);
        cursor.advance(0, "1764200000000-0");
        cursor.advance(2, "odd.id%é");
        let text = cursor.encode();
        assert!(!text.contains('\n') && text.is_ascii(), "{text}");
        let back = Cursor::parse(&text, &names).unwrap();
        assert_eq!(back, cursor);
        assert_eq!(back.position(0), Some("1764200000000-0"));
        assert_eq!(back.position(1), None);
        assert_eq!(back.position(2), Some("odd.id%é"));
    }

    #[test]
    fn refuses_other_lists_wrong_counts_and_garbage() {
        let text = Cursor::start(&["a", "b"]).encode();
        assert_eq!(
            Cursor::parse(&text, &["a", "c"]),
            Err(CursorError::OtherStreams)
        );
        assert_eq!(
            Cursor::parse(&text, &["b", "a"]),
            Err(CursorError::OtherStreams)
        );
        let check = &text[..4];
        assert_eq!(
            Cursor::parse(&format!("{check}.x"), &["a", "b"]),
            Err(CursorError::WrongCount {
                expected: 2,
                found: 1
            })
        );
        for garbage in ["", "zzzz.a.b", "12345", &format!("{check}.%G1.x")] {
            assert_eq!(
                Cursor::parse(garbage, &["a", "b"]),
                Err(CursorError::Malformed),
                "{garbage:?}"
            );
        }
        let long = format!("{check}.{}.x", "y".repeat(2000));
        assert_eq!(Cursor::parse(&long, &["a", "b"]), Err(CursorError::TooLong));
    }
}

//! The protocol's header names and the parsing of its request headers.

use http::HeaderMap;

use crate::api::ApiError;
use crate::store::durable::{Expiry, Producer};

/// `Stream-Next-Offset`.
pub const NEXT_OFFSET: &str = "stream-next-offset";
/// `Stream-Up-To-Date`.
pub const UP_TO_DATE: &str = "stream-up-to-date";
/// `Stream-Closed`.
pub const CLOSED: &str = "stream-closed";
/// `Stream-Cursor`.
pub const CURSOR: &str = "stream-cursor";
/// `Stream-Seq`.
pub const SEQ: &str = "stream-seq";
/// `Stream-TTL`.
pub const TTL: &str = "stream-ttl";
/// `Stream-Expires-At`.
pub const EXPIRES_AT: &str = "stream-expires-at";
/// `Stream-Forked-From`.
pub const FORKED_FROM: &str = "stream-forked-from";
/// `Stream-Fork-Offset`.
pub const FORK_OFFSET: &str = "stream-fork-offset";
/// `Stream-Fork-Sub-Offset`.
pub const FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
/// `Producer-Id`.
pub const PRODUCER_ID: &str = "producer-id";
/// `Producer-Epoch`.
pub const PRODUCER_EPOCH: &str = "producer-epoch";
/// `Producer-Seq`.
pub const PRODUCER_SEQ: &str = "producer-seq";
/// `Producer-Expected-Seq`.
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
/// `Producer-Received-Seq`.
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";
/// `Stream-SSE-Data-Encoding`.
pub const SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";

/// Longest `Producer-Id` and `Stream-Seq` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Requests may send these (CORS preflight answer).
pub const ALLOW_HEADERS: &str = "content-type, authorization, if-none-match, stream-seq, \
     stream-ttl, stream-expires-at, stream-closed, producer-id, producer-epoch, producer-seq, stream-forked-from, \
     stream-fork-offset, stream-fork-sub-offset";
/// Responses expose these to scripts (CORS).
pub const EXPOSE_HEADERS: &str = "stream-next-offset, stream-cursor, stream-up-to-date, \
     stream-closed, stream-ttl, stream-expires-at, producer-epoch, producer-seq, \
     producer-expected-seq, producer-received-seq, stream-sse-data-encoding, etag, location, \
     content-type";

/// The header's value as text; 400 naming it when it is not visible ASCII.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::invalid(name, "must be visible ASCII")),
    }
}

/// `Stream-Closed: true` (case-insensitive); any other value counts as absent (§4.1).
pub fn closed(headers: &HeaderMap) -> bool {
    headers
        .get(CLOSED)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// `Stream-TTL` / `Stream-Expires-At` of a `PUT`: 400 when both, or either is malformed.
pub fn expiry(headers: &HeaderMap, max_ttl_secs: u64) -> Result<Expiry, ApiError> {
    let ttl = text(headers, TTL)?;
    let at = text(headers, EXPIRES_AT)?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "Stream-TTL",
            "must not be sent with Stream-Expires-At",
        )),
        (Some(ttl), None) => {
            let digits = ttl.bytes().all(|b| b.is_ascii_digit());
            let canonical = !ttl.is_empty() && digits && (ttl == "0" || !ttl.starts_with('0'));
            let secs = ttl
                .parse::<u64>()
                .ok()
                .filter(|_| canonical)
                .ok_or_else(|| {
                    ApiError::invalid("Stream-TTL", "must be whole seconds (e.g. 3600)")
                })?;
            if secs > max_ttl_secs {
                return Err(ApiError::invalid(
                    "Stream-TTL",
                    format!("must be at most {max_ttl_secs} seconds"),
                ));
            }
            Ok(Expiry::Ttl(secs))
        }
        (None, Some(at)) => {
            let unix_ms = rfc3339_ms(at).ok_or_else(|| {
                ApiError::invalid(
                    "Stream-Expires-At",
                    "must be an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)",
                )
            })?;
            Ok(Expiry::At {
                unix_ms,
                text: at.to_owned(),
            })
        }
        (None, None) => Ok(Expiry::Never),
    }
}

/// `Producer-Id`, `-Epoch`, `-Seq`: all or none; 400 naming the bad one.
pub fn producer(headers: &HeaderMap) -> Result<Option<Producer>, ApiError> {
    let id = text(headers, PRODUCER_ID)?;
    let epoch = text(headers, PRODUCER_EPOCH)?;
    let seq = text(headers, PRODUCER_SEQ)?;
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return Err(ApiError::invalid(
                "Producer-Id",
                "Producer-Id, Producer-Epoch and Producer-Seq go together",
            ));
        }
    };
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid(
            "Producer-Id",
            format!("must be 1 to {MAX_ID_BYTES} bytes"),
        ));
    }
    let number = |name: &str, v: &str| {
        // At most 2^53 - 1, as the reference (JavaScript) server accepts.
        v.parse::<u64>()
            .ok()
            .filter(|n| v.bytes().all(|b| b.is_ascii_digit()) && *n < (1 << 53))
            .ok_or_else(|| ApiError::invalid(name, "must be a non-negative integer"))
    };
    Ok(Some(Producer {
        id: id.to_owned(),
        epoch: number("Producer-Epoch", epoch)?,
        seq: number("Producer-Seq", seq)?,
    }))
}

/// An RFC 3339 date-time (`2030-01-01T00:00:00Z`, `…T00:00:00.5+02:00`) as Unix
/// milliseconds; `None` when malformed or before 1970.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = format!("{frac:0<3}").parse().ok()?;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs.checked_mul(1000)?.checked_add(millis)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_and_garbage_does_not() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2000-03-01T00:00:00.25Z"), Some(951_868_800_250));
        assert_eq!(rfc3339_ms("1970-01-01T02:00:00+02:00"), Some(0));
        for bad in [
            "",
            "tomorrow",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }
}

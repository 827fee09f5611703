//! What the SSE layers read from a request.

use http::Request;

/// The request's resume cursor: the `Last-Event-ID` header (what browsers send on
/// reconnect), else a `?last_event_id=` query parameter (for clients that cannot set
/// headers); empty means none.
pub(crate) fn last_event_id<B>(req: &Request<B>) -> Option<String> {
    let cursor = match req.headers().get("last-event-id") {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        None => req.uri().query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let value = pair.strip_prefix("last_event_id=")?;
                Some(percent_decode(value))
            })
        }),
    };
    cursor.filter(|c| !c.is_empty())
}

/// `%XX` and `+` decoding of a query value (invalid escapes are kept as they are).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'+' => Some((b' ', 1)),
            b'%' => bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .map(|byte| (byte, 3)),
            _ => None,
        };
        let (byte, used) = decoded.unwrap_or((bytes[i], 1));
        out.push(byte);
        i += used;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_over_query_and_query_is_decoded() {
        let req = |uri: &str, header: Option<&str>| {
            let mut builder = Request::get(uri);
            if let Some(h) = header {
                builder = builder.header("last-event-id", h);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(
            last_event_id(&req("/s?last_event_id=a%2Eb+c%zz", None)).as_deref(),
            Some("a.b c%zz")
        );
        assert_eq!(
            last_event_id(&req("/s?last_event_id=q", Some("h"))).as_deref(),
            Some("h")
        );
        assert_eq!(last_event_id(&req("/s?last_event_id=", None)), None);
        assert_eq!(last_event_id(&req("/s", None)), None);
    }
}

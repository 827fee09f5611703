//! What the SSE layers read from a request.

use http::Request;

/// The request's resume cursor: the `Last-Event-ID` header (what browsers send on
/// reconnect), else a `?last_event_id=` query parameter (for clients that cannot set
/// headers); empty means none.
pub(crate) fn last_event_id<B>(req: &Request<B>) -> Option<String> {
    let cursor = match req.headers().get("last-event-id") {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        None => req
            .uri()
            .query()
            .and_then(|q| query_value(q, "last_event_id")),
    };
    cursor.filter(|c| !c.is_empty())
}

/// The first value of the query parameter `name`, `application/x-www-form-urlencoded`
/// decoded (`%XX` and `+`; invalid escapes are kept as they are).
pub(crate) fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
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

//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and
//! `tracestate` headers that carry one distributed trace across services.
//!
//! The gateway reads an incoming `traceparent` with [`TraceParent::parse`], which follows the
//! spec strictly (lowercase hex only; a trace id and a parent id that are not all zeros;
//! version `ff` refused; version `00` exactly 55 characters). A valid one makes the request
//! join that trace; anything else starts a new trace. Either way the request gets its own
//! span id, and the [`TraceContext`] holding both is what the request passes on:
//! [`TraceContext::inject`] sets `traceparent` (same trace id, this request's span id as the
//! parent) and copies `tracestate` through unchanged.
//!
//! Propagation needs no tracing backend. When one is present (agentgate's `otlp` feature),
//! the gateway asks it for the ids ([`SpanIds`]), so the span it exports and the parent id
//! the upstream sees are the same.
//!
//! The gateway puts the request's [`TraceContext`] into the extensions of the `http::Request`
//! it hands to in-process services, so a handler (or a tool it runs) can propagate it too.

use std::fmt;

use http::{HeaderMap, HeaderValue};

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;
/// Length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// A 16-byte trace id; valid when not all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; valid when not all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random, valid trace id.
    pub fn random() -> Self {
        loop {
            let id = Self(fastrand::u128(..).to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    /// Whether the id is not all zeros (the spec's "invalid" value).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }
}

impl SpanId {
    /// A random, valid span id.
    pub fn random() -> Self {
        loop {
            let id = Self(fastrand::u64(..).to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    /// Whether the id is not all zeros (the spec's "invalid" value).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 32];
        f.write_str(hex_lower(&self.0, &mut out))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 16];
        f.write_str(hex_lower(&self.0, &mut out))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A valid incoming `traceparent`: the caller's trace and span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the caller belongs to.
    pub trace_id: TraceId,
    /// The caller's span: the parent of ours.
    pub parent_id: SpanId,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` if it is not valid per the W3C spec.
    ///
    /// `version-traceid-parentid-flags`, all lowercase hex: version `00` must be exactly 55
    /// characters; a later version (`01`..`fe`) is read the same way and may carry more
    /// fields after a `-` (the spec's forward compatibility); version `ff` is invalid. An
    /// all-zero trace id or parent id is invalid.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        match version {
            0x00 if value.len() != TRACEPARENT_LEN => return None,
            0xff => return None,
            _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        hex_decode(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        hex_decode(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        let parent = Self {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        };
        (parent.trace_id.is_valid() && parent.parent_id.is_valid()).then_some(parent)
    }

    /// The valid `traceparent` among `headers`, if any (several values: none is trusted).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(value.as_bytes())
    }

    /// Whether the caller sampled (records) the trace.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// The ids of a request's span, as a tracing backend assigned them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// The trace the span belongs to.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
    /// Whether the span is sampled (exported).
    pub sampled: bool,
}

/// One request's place in a trace: what it passes on to the services it calls.
///
/// Cheap to clone (ids are plain bytes; `tracestate` is a shared header value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    flags: u8,
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The context of a request with `headers`: it joins the trace of a valid
    /// `traceparent` (keeping its flags and `tracestate`), else starts a new trace (sampled:
    /// the gateway itself leaves the decision to whoever records it). The request's span
    /// id is new either way.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        match TraceParent::from_headers(headers) {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: SpanId::random(),
                parent_id: Some(parent.parent_id),
                flags: parent.flags & SAMPLED,
                // Only kept with a valid traceparent: alone it means nothing (spec §3.3).
                tracestate: tracestate_of(headers),
            },
            None => Self {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_id: None,
                flags: SAMPLED,
                tracestate: None,
            },
        }
    }

    /// The same context with the trace id, span id and sampled flag a tracing backend
    /// assigned to the request's span (invalid ids are ignored).
    pub fn with_span_ids(mut self, ids: SpanIds) -> Self {
        if ids.trace_id.is_valid() && ids.span_id.is_valid() {
            self.trace_id = ids.trace_id;
            self.span_id = ids.span_id;
            self.flags = if ids.sampled { SAMPLED } else { 0 };
        }
        self
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This request's span id (the parent id of whatever it calls).
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span id, when the request joined a trace.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// The caller's `traceparent` as parsed (`None` when the request started the trace).
    pub fn parent(&self) -> Option<TraceParent> {
        Some(TraceParent {
            trace_id: self.trace_id,
            parent_id: self.parent_id?,
            flags: self.flags,
        })
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The `tracestate` passed through, if the caller sent one.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// The `traceparent` for requests this one makes: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0..3].copy_from_slice(b"00-");
        hex_lower(&self.trace_id.0, &mut out[3..35]);
        out[35] = b'-';
        hex_lower(&self.span_id.0, &mut out[36..52]);
        out[52] = b'-';
        hex_lower(&[self.flags], &mut out[53..55]);
        // Lowercase hex and dashes are always a valid header value.
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Sets `traceparent` (replacing the caller's) and `tracestate` (the caller's,
    /// unchanged; removed if there was none) on an outgoing request's `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

/// The `tracestate` of `headers`: several header lines are one list (spec §3.3.1),
/// joined with commas.
fn tracestate_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let mut rest = values.peekable();
    if rest.peek().is_none() {
        return Some(first.clone());
    }
    let mut joined = first.as_bytes().to_vec();
    for value in rest {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Connects the gateway's request spans to a tracing backend (OpenTelemetry in agentgate's
/// `otlp` feature), so that the ids the gateway propagates are the ids the backend exports.
///
/// Called once per request, right after its span is made, and only if the span is enabled.
pub trait SpanLink: Send + Sync + fmt::Debug {
    /// Makes `parent` (the caller's span, if the request joined a trace; `tracestate` as
    /// received) the remote parent of `span` and returns the ids the backend gave `span`,
    /// or `None` when the backend does not track it (the gateway's own ids are used then).
    fn link(
        &self,
        span: &tracing::Span,
        parent: Option<TraceParent>,
        tracestate: Option<&HeaderValue>,
    ) -> Option<SpanIds>;
}

/// Writes `bytes` as lowercase hex into `out` (twice as long) and returns it as text.
fn hex_lower<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// One lowercase hex digit's value.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Two lowercase hex digits as a byte.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)
}

/// Decodes lowercase hex `text` into `out` (half as long).
fn hex_decode(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(s: &str) -> Option<TraceParent> {
        TraceParent::parse(s.as_bytes())
    }

    #[test]
    fn parses_the_spec_example() {
        let p = parse(VALID).expect("valid");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        assert!(p.sampled());
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.expect("valid").sampled());
    }

    #[test]
    fn rejects_bad_input() {
        let bad = [
            "",
            "00",
            // all-zero trace id / parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // not hex
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version ff is invalid
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 must be exactly 55 characters
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // wrong separators and field lengths
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a later version with trailing data not after a dash
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in bad {
            assert_eq!(parse(value), None, "{value:?} must be rejected");
        }
    }

    #[test]
    fn later_versions_are_read_forward_compatibly() {
        let p = parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future");
        assert_eq!(p.expect("valid").parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }

    #[test]
    fn a_request_joins_a_valid_trace_with_a_new_span() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let cx = TraceContext::from_headers(&headers);
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            cx.parent_id().map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.span_id().is_valid());

        let mut out = headers.clone();
        cx.inject(&mut out);
        let sent = out[TRACEPARENT].to_str().expect("ascii").to_owned();
        assert_eq!(
            sent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", cx.span_id())
        );
        assert_eq!(out[TRACESTATE], "congo=t61rcWkgMzE");
        // What we send parses back to our span.
        let back = parse(&sent).expect("own traceparent is valid");
        assert_eq!(back.trace_id, cx.trace_id());
        assert_eq!(back.parent_id, cx.span_id());
    }

    #[test]
    fn bad_or_repeated_traceparent_starts_a_new_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let cx = TraceContext::from_headers(&headers);
        assert!(cx.trace_id().is_valid());
        assert_eq!(cx.parent_id(), None);
        let mut out = headers.clone();
        cx.inject(&mut out);
        assert!(
            out.get(TRACESTATE).is_none(),
            "tracestate without a parent is dropped"
        );
        assert_eq!(
            parse(out[TRACEPARENT].to_str().expect("ascii")).map(|p| p.trace_id),
            Some(cx.trace_id())
        );

        let mut split = HeaderMap::new();
        split.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        split.append(TRACESTATE, HeaderValue::from_static("a=1"));
        split.append(TRACESTATE, HeaderValue::from_static("b=2"));
        let joined = TraceContext::from_headers(&split);
        assert_eq!(
            joined.tracestate().map(|v| v.as_bytes()),
            Some(&b"a=1,b=2"[..])
        );

        let mut twice = HeaderMap::new();
        twice.append(TRACEPARENT, HeaderValue::from_static(VALID));
        twice.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(TraceContext::from_headers(&twice).parent_id(), None);
    }

    #[test]
    fn backend_ids_replace_ours_and_set_the_flag() {
        let cx = TraceContext::from_headers(&HeaderMap::new());
        let ids = SpanIds {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([9; 8]),
            sampled: false,
        };
        let cx = cx.with_span_ids(ids);
        assert_eq!(
            cx.traceparent(),
            "00-07070707070707070707070707070707-0909090909090909-00"
        );
        let unchanged = cx.clone().with_span_ids(SpanIds {
            trace_id: TraceId::default(),
            ..ids
        });
        assert_eq!(unchanged, cx);
    }

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = TraceContext::from_headers(&HeaderMap::new());
        let b = TraceContext::from_headers(&HeaderMap::new());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.span_id(), b.span_id());
        assert!(a.sampled());
    }
}

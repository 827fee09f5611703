//! The checks one fuzz input goes through for target `sse_parse`: the SSE parser
//! (middleware `sse`), incremental and whole.

use agentgate_middleware::sse::{Item, ParseError, Parser};

/// Parses `input` whole, byte by byte and in pseudo-random chunks (derived from the input,
/// so a failure reproduces), under the default limits and under tiny ones, and asserts:
/// the same items and error every time, bounded buffering after every chunk, and that every
/// parsed item is well-formed and its event re-encodes to itself.
pub fn check(input: &[u8]) {
    for (max_line, max_event) in [
        (Parser::DEFAULT_MAX_LINE, Parser::DEFAULT_MAX_EVENT),
        (24, 48),
    ] {
        let whole = run(max_line, max_event, std::iter::once(input));
        let bytewise = run(max_line, max_event, input.chunks(1));
        assert_eq!(whole, bytewise, "byte-by-byte differs from whole input");
        let split = run(max_line, max_event, RandomChunks::new(input));
        assert_eq!(whole, split, "random chunks differ from whole input");
        for item in &whole.0 {
            check_item(item);
        }
    }
}

fn run<'a>(
    max_line: usize,
    max_event: usize,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> (Vec<Item>, Option<ParseError>) {
    let mut parser = Parser::with_limits(max_line, max_event);
    let bound = max_event + 7 * max_line + 2;
    let mut items = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(err) = parser.feed(chunk) {
            assert!(error.is_none_or(|first| first == err), "error changed");
            error = Some(err);
        }
        assert!(
            parser.buffered_bytes() <= bound,
            "buffered {} > bound {bound}",
            parser.buffered_bytes()
        );
        items.extend(std::iter::from_fn(|| parser.next_item()));
    }
    assert_eq!(parser.error(), error);
    items.extend(parser.finish());
    (items, error)
}

fn check_item(item: &Item) {
    match item {
        Item::Event(event) => {
            let id = event.id.as_deref().unwrap_or("");
            assert!(!id.contains(['\0', '\r', '\n']), "bad id {id:?}");
            assert!(event.event.as_deref() != Some(""), "empty event type");
            let kind = event.event.as_deref().unwrap_or("");
            assert!(!kind.contains(['\r', '\n']), "bad event type {kind:?}");
            assert!(!event.data.contains('\r'), "CR in data");
            let mut parser = Parser::new();
            let encoded = event.encode();
            assert_eq!(parser.feed(&encoded), Ok(()));
            assert_eq!(
                parser.finish(),
                std::slice::from_ref(item),
                "re-encoding changed the event"
            );
        }
        Item::Id(id) => assert!(!id.contains(['\0', '\r', '\n']), "bad id {id:?}"),
        Item::Comment(text) => assert!(!text.contains(['\r', '\n']), "bad comment {text:?}"),
        Item::Retry(_) => {}
    }
}

/// Chunks of 1 to 16 bytes, their lengths drawn from an xorshift seeded by the input's hash.
struct RandomChunks<'a> {
    rest: &'a [u8],
    state: u64,
}

impl<'a> RandomChunks<'a> {
    fn new(input: &'a [u8]) -> Self {
        // FNV-1a; `| 1` keeps the xorshift state non-zero.
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self {
            rest: input,
            state: hash | 1,
        }
    }
}

impl<'a> Iterator for RandomChunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let len = (self.state % 16 + 1) as usize;
        let (chunk, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}

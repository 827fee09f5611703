//! The SSE parser against the edge cases of the HTML Living Standard's "Interpreting an event
//! stream", chunk-split invariance, and `parse(encode(e)) == e` as a property.
#![cfg(feature = "sse")]

use agentgate_middleware::sse::{Event, Item, ParseError, Parser};
use bytes::BytesMut;
use proptest::prelude::*;

/// Parses `input` fed as the given chunks, returning every item and the error, if any.
fn parse_chunks<'a>(
    parser: &mut Parser,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Item>, Option<ParseError>) {
    let mut items = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(err) = parser.feed(chunk) {
            error = Some(err);
        }
        while let Some(item) = parser.next_item() {
            items.push(item);
        }
    }
    (items, error)
}

/// Parses `input` whole, and checks that byte-by-byte feeding gives the same.
fn parse(input: &[u8]) -> Vec<Item> {
    let whole = parse_chunks(&mut Parser::new(), [input]);
    let bytewise = parse_chunks(&mut Parser::new(), input.chunks(1));
    assert_eq!(whole, bytewise, "chunking changed the result for {input:?}");
    assert_eq!(whole.1, None);
    whole.0
}

fn message(data: &str) -> Item {
    Item::Event(Event::message(data))
}

fn event(id: Option<&str>, kind: Option<&str>, data: &str) -> Item {
    Item::Event(Event {
        id: id.map(Into::into),
        event: kind.map(Into::into),
        data: data.into(),
    })
}

#[test]
fn all_fields() {
    assert_eq!(
        parse(b"id: 1\nevent: delta\ndata: x\n\n"),
        [event(Some("1"), Some("delta"), "x")]
    );
}

#[test]
fn multi_line_data_joined_with_lf_and_trailing_lf_removed() {
    assert_eq!(parse(b"data: a\ndata: b\ndata\n\n"), [message("a\nb\n")]);
    assert_eq!(parse(b"data\n\n"), [message("")]);
    assert_eq!(parse(b"data:\n\n"), [message("")]);
}

#[test]
fn lf_crlf_and_cr_line_endings() {
    let want = [message("a\nb"), message("c")];
    assert_eq!(parse(b"data: a\ndata: b\n\ndata: c\n\n"), want);
    assert_eq!(parse(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), want);
    assert_eq!(parse(b"data: a\rdata: b\r\rdata: c\r\r"), want);
    assert_eq!(parse(b"data: a\rdata: b\r\n\ndata: c\n\r"), want, "mixed");
}

#[test]
fn crlf_split_across_chunks_is_one_line_ending() {
    let (items, _) = parse_chunks(&mut Parser::new(), [&b"data: a\r"[..], b"\n", b"\r", b"\n"]);
    assert_eq!(items, [message("a")]);
}

#[test]
fn cr_at_chunk_end_then_other_byte_is_a_line_ending() {
    let (items, _) = parse_chunks(&mut Parser::new(), [&b"data: a\r"[..], b"data: b\r\r"]);
    assert_eq!(items, [message("a\nb")]);
}

#[test]
fn cr_cr_is_two_line_endings_even_split() {
    let (items, _) = parse_chunks(&mut Parser::new(), [&b"data: a\r"[..], b"\r"]);
    assert_eq!(items, [message("a")]);
}

#[test]
fn bom_at_start_is_skipped_once() {
    assert_eq!(parse(b"\xEF\xBB\xBFdata: a\n\n"), [message("a")]);
    // A second BOM is part of the field name "\u{feff}data", an unknown field.
    assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), []);
    assert_eq!(parse(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"), [message("a")]);
    // In data, U+FEFF is kept.
    assert_eq!(parse(b"data: \xEF\xBB\xBFa\n\n"), [message("\u{feff}a")]);
}

#[test]
fn bom_split_across_chunks() {
    let (items, _) = parse_chunks(
        &mut Parser::new(),
        [&b"\xEF"[..], b"", b"\xBB", b"\xBFdata: a\n\n"],
    );
    assert_eq!(items, [message("a")]);
}

#[test]
fn comments_are_yielded_without_colon_and_one_space() {
    assert_eq!(
        parse(b": heartbeat\n:no space\n:  two spaces\n:\ndata: a\n\n"),
        [
            Item::Comment("heartbeat".into()),
            Item::Comment("no space".into()),
            Item::Comment(" two spaces".into()),
            Item::Comment(String::new()),
            message("a"),
        ]
    );
}

#[test]
fn comment_inside_a_block_comes_first() {
    assert_eq!(
        parse(b"data: a\n: ping\ndata: b\n\n"),
        [Item::Comment("ping".into()), message("a\nb")]
    );
}

#[test]
fn field_value_split_at_first_colon_and_one_space_removed() {
    assert_eq!(parse(b"data:a:b\n\n"), [message("a:b")]);
    assert_eq!(parse(b"data:  a\n\n"), [message(" a")]);
    assert_eq!(parse(b"data: a \n\n"), [message("a ")]);
    assert_eq!(parse(b"data:\ta\n\n"), [message("\ta")]);
}

#[test]
fn line_without_colon_is_field_with_empty_value() {
    assert_eq!(parse(b"data\ndata\n\n"), [message("\n")]);
    assert_eq!(parse(b"id\ndata: a\n\n"), [event(Some(""), None, "a")]);
}

#[test]
fn unknown_fields_and_wrong_case_are_ignored() {
    assert_eq!(
        parse(b"foo: bar\nDATA: x\nData: y\n data: z\ndata: a\n\n"),
        [message("a")]
    );
}

#[test]
fn retry_only_when_all_ascii_digits() {
    assert_eq!(
        parse(b"retry: 3000\nretry: +5\nretry: -1\nretry: 1.5\nretry: 1 \nretry:\nretry: \xD9\xA3\nretry:42\n\n"),
        [Item::Retry(3000), Item::Retry(42)]
    );
    assert_eq!(
        parse(b"retry: 99999999999999999999999\n\n"),
        [],
        "overflow ignored"
    );
    assert_eq!(parse(b"retry: 0\n\n"), [Item::Retry(0)]);
}

#[test]
fn retry_is_yielded_before_its_event() {
    assert_eq!(
        parse(b"data: a\nretry: 10\n\n"),
        [Item::Retry(10), message("a")]
    );
}

#[test]
fn id_only_block_yields_id() {
    assert_eq!(
        parse(b"id: 7\n\ndata: a\n\n"),
        [Item::Id("7".into()), message("a")],
        "the next event carries no id of its own"
    );
    assert_eq!(parse(b"id: 7\nevent: x\n\n"), [Item::Id("7".into())]);
    assert_eq!(parse(b"id\n\n"), [Item::Id(String::new())], "a reset");
}

#[test]
fn block_without_data_or_id_dispatches_nothing() {
    assert_eq!(parse(b"event: x\n\n\n\n"), []);
    // and its event type does not leak into the next block
    assert_eq!(parse(b"event: x\n\ndata: a\n\n"), [message("a")]);
}

#[test]
fn id_with_nul_is_ignored_last_id_wins() {
    assert_eq!(
        parse(b"id: 1\nid: a\0b\ndata: x\n\n"),
        [event(Some("1"), None, "x")]
    );
    assert_eq!(parse(b"id: a\0b\ndata: x\n\n"), [message("x")]);
    assert_eq!(
        parse(b"id: 1\nid: 2\ndata: x\n\n"),
        [event(Some("2"), None, "x")]
    );
}

#[test]
fn last_event_id_is_sticky() {
    let mut parser = Parser::new();
    let (items, _) = parse_chunks(&mut parser, [&b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n"[..]]);
    assert_eq!(items, [event(Some("1"), None, "a"), message("b")]);
    assert_eq!(parser.last_event_id(), Some("1"), "id 2 not yet dispatched");
    parser.feed(b"\n").expect("within limits");
    assert_eq!(parser.next_item(), Some(Item::Id("2".into())));
    assert_eq!(parser.last_event_id(), Some("2"));
}

#[test]
fn empty_event_type_is_message() {
    assert_eq!(parse(b"event:\ndata: a\n\n"), [message("a")]);
    assert_eq!(
        parse(b"event: message\ndata: a\n\n"),
        [event(None, Some("message"), "a")]
    );
}

#[test]
fn invalid_utf8_is_replaced_and_parsing_goes_on() {
    assert_eq!(
        parse(b"data: a\xFFb\n\ndata: c\n\n"),
        [message("a\u{FFFD}b"), message("c")]
    );
    // A truncated sequence before the line ending is one replacement character.
    assert_eq!(
        parse(b"data: \xE2\x82\ndata: \xE2\x82\xAC\n\n"),
        [message("\u{FFFD}\n€")]
    );
    assert_eq!(parse(b"id: \xC3\n\n"), [Item::Id("\u{FFFD}".into())]);
}

#[test]
fn utf8_split_across_chunks() {
    let (items, _) = parse_chunks(
        &mut Parser::new(),
        [&b"data: \xE2"[..], b"\x82", b"\xAC\n\n"],
    );
    assert_eq!(items, [message("€")]);
}

#[test]
fn unterminated_trailing_input_is_dropped() {
    let mut parser = Parser::new();
    parser
        .feed(b"data: a\n\ndata: b\n: no newline")
        .expect("within limits");
    assert!(parser.has_partial());
    assert_eq!(parser.finish(), [message("a")]);
}

#[test]
fn line_too_long_even_unfinished() {
    let mut parser = Parser::with_limits(16, 1024);
    assert_eq!(parser.feed(b"data: 0123456789"), Ok(()), "16 bytes fit");
    assert_eq!(parser.feed(b"x"), Err(ParseError::LineTooLong));
    assert_eq!(parser.feed(b"\n\n"), Err(ParseError::LineTooLong), "sticky");
    assert_eq!(parser.error(), Some(ParseError::LineTooLong));
    assert!(parser.buffered_bytes() <= 16);
}

#[test]
fn line_too_long_keeps_earlier_items() {
    let mut parser = Parser::with_limits(16, 1024);
    let input = b": ok\ndata: this line is much too long\n\n";
    let (items, error) = parse_chunks(&mut parser, [&input[..]]);
    assert_eq!(
        (items, error),
        (
            vec![Item::Comment("ok".into())],
            Some(ParseError::LineTooLong)
        )
    );
    let (items, error) = parse_chunks(&mut Parser::with_limits(16, 1024), input.chunks(1));
    assert_eq!(
        (items, error),
        (
            vec![Item::Comment("ok".into())],
            Some(ParseError::LineTooLong)
        )
    );
}

#[test]
fn event_too_large() {
    // Each "data: 0123456789" line adds 11 bytes (value and '\n').
    let mut parser = Parser::with_limits(64, 32);
    assert_eq!(parser.feed(b"data: 0123456789\ndata: 0123456789\n"), Ok(()));
    assert_eq!(
        parser.feed(b"data: 0123456789\n"),
        Err(ParseError::EventTooLarge)
    );
    assert!(parser.buffered_bytes() <= 32);
    // The limit is per event, not per stream.
    let mut parser = Parser::with_limits(64, 32);
    let chunk = b"data: 0123456789\ndata: 0123456789\n\n".repeat(10);
    let (items, error) = parse_chunks(&mut parser, [&chunk[..]]);
    assert_eq!(error, None);
    assert_eq!(items.len(), 10);
}

#[test]
fn default_limits_bound_a_hostile_stream() {
    let mut parser = Parser::new();
    let chunk = vec![b'x'; 64 * 1024];
    let mut fed = 0;
    let err = loop {
        match parser.feed(&chunk) {
            Ok(()) => fed += chunk.len(),
            Err(err) => break err,
        }
        assert!(
            fed <= Parser::DEFAULT_MAX_LINE,
            "never buffers past the limit"
        );
    };
    assert_eq!(err, ParseError::LineTooLong);
    assert_eq!(fed, Parser::DEFAULT_MAX_LINE);
}

#[test]
fn encode_writes_the_wire_form() {
    let e = Event {
        id: Some("17-0".into()),
        event: Some("delta".into()),
        data: "a\nb\r\nc".into(),
    };
    assert_eq!(
        &e.encode()[..],
        b"id: 17-0\nevent: delta\ndata: a\ndata: b\ndata: c\n\n"
    );
    let mut buf = BytesMut::from(&b": hi\n\n"[..]);
    Event::message("").encode_into(&mut buf);
    assert_eq!(&buf[..], b": hi\n\ndata: \n\n");
}

#[test]
fn encode_normalises_cr_in_data() {
    let e = Event::message("a\rb\r\nc\r");
    let items = parse(&e.encode());
    assert_eq!(items, [message("a\nb\nc\n")]);
}

// ---- properties ----

fn arb_event() -> impl Strategy<Value = Event> {
    (
        proptest::option::of("[^\r\n\0]{0,12}"),
        proptest::option::of("[^\r\n]{1,12}"),
        // data: any chars but CR, with LF weighted in
        proptest::collection::vec(
            prop_oneof![3 => "[^\r]{0,8}", 1 => Just("\n".to_string())],
            0..6,
        )
        .prop_map(|parts| parts.concat()),
    )
        .prop_map(|(id, event, data)| Event { id, event, data })
}

/// Splits `input` at the given fractions of its length.
fn split_at_fractions<'a>(input: &'a [u8], cuts: &[f64]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| (f * input.len() as f64) as usize)
        .collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    points.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

proptest! {
    #[test]
    fn parse_of_encode_is_identity(e in arb_event()) {
        let (items, error) = parse_chunks(&mut Parser::new(), [&e.encode()[..]]);
        prop_assert_eq!(error, None);
        prop_assert_eq!(items, vec![Item::Event(e)]);
    }

    #[test]
    fn parse_of_encoded_stream_with_random_splits(
        events in proptest::collection::vec(arb_event(), 0..6),
        cuts in proptest::collection::vec(0.0..1.0f64, 0..12),
        bom in any::<bool>(),
    ) {
        let mut buf = BytesMut::new();
        if bom {
            buf.extend_from_slice(b"\xEF\xBB\xBF");
        }
        for e in &events {
            e.encode_into(&mut buf);
        }
        let (items, error) = parse_chunks(&mut Parser::new(), split_at_fractions(&buf, &cuts));
        prop_assert_eq!(error, None);
        let want: Vec<Item> = events.into_iter().map(Item::Event).collect();
        prop_assert_eq!(items, want);
    }

    #[test]
    fn cr_in_data_comes_back_as_lf(data in "[a\r\n]{0,16}") {
        let e = Event::message(data.clone());
        let (items, _) = parse_chunks(&mut Parser::new(), [&e.encode()[..]]);
        let normalised = data.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(items, vec![message(&normalised)]);
    }

    #[test]
    fn arbitrary_bytes_same_items_for_any_split(
        input in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                2 => Just(b'\n'),
                2 => Just(b'\r'),
                2 => Just(b':'),
                1 => Just(b' '),
            ],
            0..200,
        ),
        cuts in proptest::collection::vec(0.0..1.0f64, 0..12),
        limits in (0usize..40, 0usize..80),
    ) {
        let whole = parse_chunks(&mut Parser::with_limits(limits.0, limits.1), [&input[..]]);
        let split = parse_chunks(
            &mut Parser::with_limits(limits.0, limits.1),
            split_at_fractions(&input, &cuts),
        );
        let bytewise = parse_chunks(&mut Parser::with_limits(limits.0, limits.1), input.chunks(1));
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(&whole, &bytewise);
    }
}

//! Maps between dotted key paths (`store.redis.urls[1]`) and positions in TOML source.
//!
//! `toml` reports byte spans and `Config::validate` reports key paths; users want both
//! turned into a line and column, and a key for each. A span-preserving `toml_edit` parse of
//! the same source connects the two.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use toml_edit::{Document, Item, Table, TableLike, Value};

/// A TOML source, parsed for locating keys.
pub(crate) struct Source<'s> {
    text: &'s str,
    /// `None` when the text is not valid TOML; lookups then find nothing.
    doc: Option<Document<&'s str>>,
}

impl<'s> Source<'s> {
    /// Parses `text`, keeping spans.
    pub(crate) fn parse(text: &'s str) -> Self {
        Self {
            text,
            doc: Document::parse(text).ok(),
        }
    }

    /// 1-based `(line, column)` of the value at `path`, or `None` if the key is absent.
    pub(crate) fn position_of(&self, path: &str) -> Option<(usize, usize)> {
        let segments = parse_path(path)?;
        let mut node = Node::Item(self.doc.as_ref()?.as_item());
        let mut key_span = None;
        for segment in &segments {
            match segment {
                Segment::Key(name) => {
                    let (key, item) = node.table_like()?.get_key_value(name)?;
                    key_span = key.span();
                    node = Node::Item(item);
                }
                Segment::Index(index) => {
                    node = node.elements().into_iter().nth(*index)?;
                }
            }
        }
        // Implicit tables (made by dotted keys) have no span of their own; their key does.
        let span = node.span().or(key_span)?;
        Some(self.line_column(span.start))
    }

    /// Dotted path of the innermost key or value whose text covers byte `offset`.
    pub(crate) fn key_at(&self, offset: usize) -> Option<String> {
        let mut path = Vec::new();
        let root = Node::Item(self.doc.as_ref()?.as_item());
        if find(root, offset, &mut path) && !path.is_empty() {
            Some(format_path(&path))
        } else {
            None
        }
    }

    /// 1-based `(line, column)` of byte `offset`; the column counts characters.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// Depth-first search for the innermost node covering `offset`, leaving its path in `path`.
fn find(node: Node<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    if let Some(table) = node.table_like() {
        for (name, item) in table.iter() {
            path.push(Segment::Key(name.to_owned()));
            let on_key = table
                .key(name)
                .and_then(toml_edit::Key::span)
                .is_some_and(|span| covers(&span, offset));
            if on_key || find(Node::Item(item), offset, path) {
                return true;
            }
            path.pop();
        }
    }
    for (index, element) in node.elements().into_iter().enumerate() {
        path.push(Segment::Index(index));
        if find(element, offset, path) {
            return true;
        }
        path.pop();
    }
    node.span().is_some_and(|span| covers(&span, offset))
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// Anything in a parsed document that can sit at a key path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    /// An element of an array of tables (`[[x]]`).
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Value(value) => value.span(),
            Node::Table(table) => table.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
            Node::Table(table) => Some(table),
        }
    }

    fn elements(self) -> Vec<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(tables)) => tables.iter().map(Node::Table).collect(),
            Node::Item(Item::Value(value)) | Node::Value(value) => value
                .as_array()
                .map(|array| array.iter().map(Node::Value).collect())
                .unwrap_or_default(),
            Node::Item(_) | Node::Table(_) => Vec::new(),
        }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Splits `a."b c"[1][2].d` into segments; `None` if it is malformed.
fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = path;
    loop {
        let (name, after) = match rest.strip_prefix('"') {
            Some(quoted) => parse_quoted(quoted)?,
            None => {
                let (name, after) = rest.split_at(rest.find(['.', '[']).unwrap_or(rest.len()));
                if name.is_empty() {
                    return None;
                }
                (name.to_owned(), after)
            }
        };
        segments.push(Segment::Key(name));
        rest = after;
        while let Some(bracketed) = rest.strip_prefix('[') {
            let (index, after) = bracketed.split_once(']')?;
            segments.push(Segment::Index(index.parse().ok()?));
            rest = after;
        }
        if rest.is_empty() {
            return Some(segments);
        }
        rest = rest.strip_prefix('.')?;
    }
}

/// Reads a quoted key written by [`key_name`], starting after its opening quote; returns the
/// key and the text after its closing quote.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((name, &text[i + 1..])),
            '\\' => name.push(match chars.next()?.1 {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                _ => return None,
            }),
            c => name.push(c),
        }
    }
    None
}

/// Whether `name` is a bare TOML key (ASCII letters, digits, `_`, `-`), written unquoted.
pub(crate) fn is_bare_key(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `name` as one segment of a dotted path: as is when bare, quoted otherwise
/// (`upstreams."my pool"`).
pub(crate) fn key_name(name: &str) -> Cow<'_, str> {
    if is_bare_key(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name:?}"))
    }
}

/// Renders segments as a dotted path, quoting keys that are not bare TOML keys.
fn format_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Index(index) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "[{index}]");
            }
            Segment::Key(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_name(name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let segments = parse_path("store.redis.urls[1]").expect("valid path");
        assert_eq!(
            segments,
            vec![
                Segment::Key("store".into()),
                Segment::Key("redis".into()),
                Segment::Key("urls".into()),
                Segment::Index(1),
            ]
        );
        assert_eq!(format_path(&segments), "store.redis.urls[1]");
        assert_eq!(parse_path("a..b"), None);
        assert_eq!(parse_path("a[x]"), None);
        assert_eq!(parse_path("a."), None);
        let quoted = parse_path(r#"upstreams."my \"pool\".x"[0].peers"#).expect("valid path");
        assert_eq!(
            quoted,
            vec![
                Segment::Key("upstreams".into()),
                Segment::Key("my \"pool\".x".into()),
                Segment::Index(0),
                Segment::Key("peers".into()),
            ]
        );
        assert_eq!(
            format_path(&quoted),
            r#"upstreams."my \"pool\".x"[0].peers"#
        );
        assert_eq!(parse_path(r#"a."b"#), None);
    }

    #[test]
    fn positions_of_values_tables_and_array_elements() {
        let text =
            "top = 1\n[store.redis]\nurls = [\"a\",\n  \"é\", \"b\"]\n[[x]]\ny = { z = 2 }\n";
        let source = Source::parse(text);
        assert_eq!(source.position_of("top"), Some((1, 7)));
        assert_eq!(source.position_of("store.redis.urls"), Some((3, 8)));
        assert_eq!(source.position_of("store.redis.urls[1]"), Some((4, 3)));
        assert_eq!(source.position_of("store.redis.urls[2]"), Some((4, 8)));
        assert_eq!(source.position_of("x[0].y.z"), Some((6, 11)));
        assert_eq!(source.position_of("store.redis.cluster"), None);
        assert_eq!(source.position_of("store.redis.urls[3]"), None);

        let source = Source::parse("[upstreams.\"my pool\"]\npeers = [\"x\"]\n");
        assert_eq!(
            source.position_of(r#"upstreams."my pool".peers[0]"#),
            Some((2, 10))
        );
    }

    #[test]
    fn key_at_finds_the_innermost_key() {
        let text = "[server]\nlisen = 1\n[a]\n\"b c\" = [1, 2]\n";
        let source = Source::parse(text);
        assert_eq!(
            source
                .key_at(text.find("lisen").expect("present"))
                .as_deref(),
            Some("server.lisen")
        );
        assert_eq!(
            source.key_at(text.find('2').expect("present")).as_deref(),
            Some("a.\"b c\"[1]")
        );
    }

    #[test]
    fn line_column_counts_characters() {
        let source = Source::parse("a = \"é\"\nb = 1\n");
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(7), (1, 7));
        assert_eq!(source.line_column(9), (2, 1));
        assert_eq!(source.line_column(999), (3, 1));
    }
}

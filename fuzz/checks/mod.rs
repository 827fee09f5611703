//! The properties every fuzz input is checked against: one module per fuzz target, each with
//! `pub fn check(input: &[u8])` that panics when a property fails.
//!
//! Written once, used twice: the cargo-fuzz targets (`fuzz_targets/<name>.rs`) call this
//! crate's `check`s under libFuzzer on nightly, and the root crate's `tests/fuzz_corpus.rs`
//! includes this file to replay the committed corpora (`corpus/<name>/`) on stable.
//!
//! The targets that go through the agent API share one in-process gateway ([`gateway`]):
//! the real `AgentApi` service on the memory store, so a check sees what a client would
//! (status, JSON error body) and what was written.

pub mod api_bodies;
pub mod config_file;
pub mod gateway;
pub mod last_event_id;
pub mod multiplex_cursor;
pub mod path_normalize;
pub mod sse_parse;
pub mod stream_token;
pub mod tool_batch;

/// A target's property check: panics on an input that breaks a property.
pub type Check = fn(&[u8]);

/// Every target's name (its `fuzz_targets/` file and `corpus/` directory) and its check.
pub const TARGETS: [(&str, Check); 8] = [
    ("api_bodies", api_bodies::check),
    ("config_file", config_file::check),
    ("last_event_id", last_event_id::check),
    ("multiplex_cursor", multiplex_cursor::check),
    ("path_normalize", path_normalize::check),
    ("sse_parse", sse_parse::check),
    ("stream_token", stream_token::check),
    ("tool_batch", tool_batch::check),
];

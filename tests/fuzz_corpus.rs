//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same property
//! checks the cargo-fuzz targets run (`fuzz/checks/`, included here), so every input the
//! fuzzers kept is exercised on stable Rust by `scripts/test`, without nightly or cargo-fuzz.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/checks/mod.rs"]
#[allow(dead_code, missing_docs)]
mod checks;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Replays `target`'s corpus; every file must pass its checks.
fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .expect("a target of fuzz/checks");
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{target}: corpus too small");
    for path in files {
        let input = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let targets: Vec<&str> = checks::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(dirs, targets);
    for target in targets {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(source.is_file(), "no fuzz target {}", source.display());
    }
}

#[test]
fn api_bodies_corpus() {
    replay("api_bodies");
}

#[test]
fn path_normalize_corpus() {
    replay("path_normalize");
}

#[test]
fn config_file_corpus() {
    replay("config_file");
}

#[test]
fn last_event_id_corpus() {
    replay("last_event_id");
}

#[test]
fn multiplex_cursor_corpus() {
    replay("multiplex_cursor");
}

#[test]
fn sse_parse_corpus() {
    replay("sse_parse");
}

#[test]
fn stream_token_corpus() {
    replay("stream_token");
}

#[test]
fn tool_batch_corpus() {
    replay("tool_batch");
}

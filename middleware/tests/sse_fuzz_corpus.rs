//! Replays the committed fuzz corpus (`fuzz/corpus/parse/`) through the fuzz target's checks,
//! so the corpus is exercised on stable Rust in CI without cargo-fuzz.
#![cfg(feature = "sse")]

#[path = "../fuzz/parse_check.rs"]
mod parse_check;

#[test]
fn sse_fuzz_corpus_passes_the_parse_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus too small: {}", files.len());
    for path in files {
        let input = std::fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| parse_check::check(&input));
        assert!(result.is_ok(), "corpus file {} failed", path.display());
    }
}

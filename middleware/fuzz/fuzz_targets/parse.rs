//! Fuzzes the SSE parser: no panic, the same items and error for any chunking, bounded
//! buffering, and every parsed event surviving `encode` then `parse` (see `parse_check.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../parse_check.rs"]
mod parse_check;

fuzz_target!(|input: &[u8]| parse_check::check(input));

//! Fuzz target `stream_token`: the properties are in `checks/stream_token.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::stream_token::check(input));

//! Fuzz target `sse_parse`: the properties are in `checks/sse_parse.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::sse_parse::check(input));

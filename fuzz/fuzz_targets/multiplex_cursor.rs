//! Fuzz target `multiplex_cursor`: the properties are in `checks/multiplex_cursor.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::multiplex_cursor::check(input));

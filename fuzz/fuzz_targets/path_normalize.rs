//! Fuzz target `path_normalize`: the properties are in `checks/path_normalize.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::path_normalize::check(input));

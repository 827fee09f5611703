//! Fuzz target `api_bodies`: the properties are in `checks/api_bodies.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::api_bodies::check(input));

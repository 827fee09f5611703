//! Fuzz target `last_event_id`: the properties are in `checks/last_event_id.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::last_event_id::check(input));

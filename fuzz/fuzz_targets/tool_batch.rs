//! Fuzz target `tool_batch`: the properties are in `checks/tool_batch.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::tool_batch::check(input));

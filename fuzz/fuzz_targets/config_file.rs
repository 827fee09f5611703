//! Fuzz target `config_file`: the properties are in `checks/config_file.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| agentgate_fuzz::config_file::check(input));

//! Any bytes as a configuration file: a configuration or a list of problems, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| railproxy::fuzzing::config(data));

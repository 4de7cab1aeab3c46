//! Any bytes as an Available-Dictionary header value: a version id or a refusal, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| delta::testing::fuzzing::available_dictionary(data));

//! Any bytes as Accept-Encoding, a size or a duration: parsed consistently, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| railproxy::fuzzing::values(data));

//! Any bytes as a dcz body and as a zstd body: refused or verified, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| delta::testing::fuzzing::decode_raw(data));

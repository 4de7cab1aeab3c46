//! A base and an edited new body: the round trip is exact, streamed or not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| delta::testing::fuzzing::round_trip(data));

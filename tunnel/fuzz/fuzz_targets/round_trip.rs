//! A base and an edited new body: the round trip is exact, streamed or not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel::fuzzing::round_trip(data));
